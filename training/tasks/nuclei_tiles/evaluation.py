"""Evaluation of the ``nuclei-tiles`` task: a checkpoint on a dataset, a cycle's validation.

``evaluate`` serves ``python -m training evaluate`` (through :mod:`.task`); the rest are the
per-epoch and per-cycle validation values of a training run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel
from napari_neuroseg.models.spec import ModelSpec
from training.tasks._common import DataError
from training.tasks.nuclei_tiles.data import TileData, check_tile_shapes, labelled_tiles
from training.tasks.nuclei_tiles.metrics import (
    predict_probabilities,
    scalar_metrics,
    tile_metrics,
)

__all__ = ["check_classes", "epoch_metrics", "evaluate", "item_labels", "model_device",
           "val_metrics"]


def check_classes(data: Dataset, spec: ModelSpec) -> None:
    """Refuse a dataset whose class map does not fit ``spec``'s classes (DataError)."""
    if sorted(data.class_map) != list(range(len(spec.classes))):
        raise DataError(f"{data.path}: class map {data.class_map} does not fit {spec.name!r} "
                        f"(classes {dict(enumerate(spec.classes))})")


def item_labels(data: Dataset, indices: Any) -> list[int]:
    """The labels of items ``indices``."""
    return [int(data.items[int(i)].label) for i in indices]


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters live."""
    return next(model.parameters()).device


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, AUC and confusion matrix of ``loaded`` on every tile
    of ``data`` (all items, whatever their ``split``).

    Raises
    ------
    DataError
        Tiles of another size than the model's input, or a class map that does not fit.
    """
    check_classes(data, loaded.spec)
    size = int(loaded.spec.arch_kwargs["input_size"])
    indices = range(len(data.items))
    check_tile_shapes(data, size)
    tiles = TileData.from_source(labelled_tiles(data, indices, size),
                                 item_labels(data, indices), loaded.spec)
    probs, labels = predict_probabilities(loaded.model.to(device),
                                          DataLoader(tiles, batch_size=batch_size), device)
    return tile_metrics(labels, probs, list(loaded.spec.classes))


def epoch_metrics(model, loader, device, names: list[str]) -> dict[str, float]:
    """The Trainer's per-epoch validation metrics (numbers only, for the history)."""
    probs, labels = predict_probabilities(model, loader, device)
    found = scalar_metrics(tile_metrics(labels, probs, names))
    found.pop("n_tiles", None)
    return found


def val_metrics(model, val: TileData, names: list[str], batch_size: int) -> dict[str, Any]:
    """A cycle's validation metrics for ``cycle.json`` (JSON scalars, None when undefined)."""
    probs, labels = predict_probabilities(model, DataLoader(val, batch_size=batch_size),
                                          model_device(model))
    found = tile_metrics(labels, probs, names)
    return {k: v for k, v in found.items() if not isinstance(v, list | dict)}
