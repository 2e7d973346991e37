"""A nuclei checkpoint on dataset tiles at the model's resolution, scored at the tiles' own.

A tile whose µm/px is known is resampled to the spec's working resolution
(``spec.input.resolution``), as the plugin's engine does with a slide; the network's maps are
post-processed there, and the instances (and their types) are brought back to the tile's grid
by nearest-neighbour upsampling, so the scores compare with the annotation as drawn. A tile
without a µm/px, or a spec without a resolution, runs as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel
from napari_neuroseg.models.hovernet_post import hovernet_instances, instance_types
from napari_neuroseg.models.runner import normalize
from training.tasks._common import DataError
from training.tasks.nuclei.data import macenko_normalise, rgb
from training.tasks.nuclei.scoring import mean_instance_scores
from training.tasks.nuclei.sources import resize_labels, resize_rgb, type_lookup, working_shape
from training.tasks.nuclei.task import postprocess_options, uses_macenko
from training.tasks.nuclei.type_scores import type_scores

__all__ = ["TileMaps", "model_scores", "tile_maps", "typed_names"]


@dataclass(frozen=True)
class TileMaps:
    """The network's maps of one tile at the working resolution, and its annotation.

    Attributes
    ----------
    prob, hv : numpy.ndarray
        Nuclear probability ``(h, w)`` and h/v maps ``(2, h, w)`` at the working resolution.
    tp : numpy.ndarray or None
        Type probabilities ``(T, h, w)`` (None without a type branch).
    true : numpy.ndarray of int64
        The annotated instances on the tile's grid.
    true_types : dict
        ``{instance id: type}`` of the annotation ({} for a source without types).
    """

    prob: np.ndarray
    hv: np.ndarray
    tp: np.ndarray | None
    true: np.ndarray
    true_types: dict[int, int]

    def instances(self, post: dict[str, Any]) -> tuple[np.ndarray, dict[int, int]]:
        """Predicted instances on the tile's grid and their types ({} without types)."""
        labels = hovernet_instances(self.prob, self.hv, **post)
        types = instance_types(labels, self.tp) if self.tp is not None else {}
        return resize_labels(labels, self.true.shape), types


def tile_maps(loaded: LoadedModel, data: Dataset, indices, device: torch.device
              ) -> Iterator[TileMaps]:
    """:class:`TileMaps` of the items ``indices``, one forward pass each."""
    spec, model = loaded.spec, loaded.model.to(device).eval()
    working = spec.input.resolution
    macenko = uses_macenko(spec)
    with torch.inference_mode():
        for index in indices:
            item = data.items[int(index)]
            true = data.read_mask(item)
            if true is None:
                raise DataError(f"{data.path}: item {item.id} has no instance mask")
            true = np.asarray(true).astype(np.int64)
            image = np.clip(rgb(data.read_image(item)), 0, 255).astype(np.uint8)
            if macenko:
                image = macenko_normalise(image)
            mpp = item.region.get("mpp")
            shape = working_shape(true.shape, mpp, working) if mpp and working else true.shape
            x = torch.from_numpy(np.ascontiguousarray(
                resize_rgb(image, shape).transpose(2, 0, 1), np.float32))[None]
            out = model(normalize(x, spec.input.normalization).to(device))
            tp = out.get("tp")
            lut = type_lookup(item.extra, int(true.max()))
            yield TileMaps(
                prob=torch.softmax(out["np"].float(), dim=1)[0, 1].cpu().numpy(),
                hv=out["hv"].float()[0].cpu().numpy(),
                tp=None if tp is None else torch.softmax(tp.float(), dim=1)[0].cpu().numpy(),
                true=true,
                true_types={int(k): int(lut[int(k)]) for k in item.extra.get("types", {})})


def typed_names(loaded: LoadedModel, data: Dataset, indices) -> dict[int, str]:
    """``{type id: name}`` when both the model and every scored item have types, else {}."""
    names = list(loaded.spec.extra.get("type_classes") or [])
    items = [data.items[int(i)] for i in indices]
    if len(names) < 2 or not items or not all("types" in item.extra for item in items):
        return {}
    return dict(enumerate(names))


def model_scores(loaded: LoadedModel, data: Dataset, indices, device: torch.device,
                 post: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dice, AJI, PQ (DQ, SQ) and nuclei counts of a checkpoint on the items ``indices``,
    with its saved post-processing (or ``post``); plus ``types`` (:func:`type_scores`) when
    the model and the items have nucleus types."""
    post = post or postprocess_options(spec=loaded.spec)
    names = typed_names(loaded, data, indices)
    typed: list = []

    def pairs():
        for maps in tile_maps(loaded, data, indices, device):
            pred, pred_types = maps.instances(post)
            if names:
                typed.append((maps.true, maps.true_types, pred, pred_types))
            yield maps.true, pred

    scores = mean_instance_scores(pairs())
    if names:
        scores["types"] = type_scores(typed, names)
    return scores
