"""Scoring a tissue checkpoint: ``python -m training evaluate`` on a tissue dataset
(:func:`evaluate`) and the majority-class baseline a run reports beside its metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel
from napari_neuroseg.models.spec import ModelSpec
from training.metrics import ConfusionMatrix
from training.tasks._common import DataError
from training.tasks.tissue.config import rare_classes
from training.tasks.tissue.crops import SectionCrops
from training.tasks.tissue.data import (
    IGNORE_INDEX,
    TileData,
    check_tiles,
    fold_lookup,
    prep_for_spec,
    same_classes,
)
from training.tasks.tissue.metrics import evaluate_segmentation


def majority_baseline(val: TorchDataset, counts: np.ndarray, names: tuple[str, ...]
                      ) -> dict[str, Any]:
    """Scores of the map that gives every pixel the training split's most frequent class.

    Returns
    -------
    dict
        :meth:`ConfusionMatrix.summary` plus ``class`` (the majority class's name).
    """
    majority = int(counts.sum(0).argmax())
    matrix = ConfusionMatrix(len(names), ignore_index=IGNORE_INDEX)
    for i in range(len(val)):
        truth = val[i][1].numpy().ravel()
        matrix.update(truth, np.full_like(truth, majority))
    return {**matrix.summary(names), "class": names[majority]}


def _working_factor(spec: ModelSpec, data: Dataset) -> int:
    """How many times coarser the checkpoint works than the dataset's items (1 if unknown)."""
    mpps = [float(item.region["mpp"]) for item in data.items
            if isinstance(item.region, dict) and item.region.get("mpp")]
    if not mpps or not spec.input.resolution:
        return 1
    return max(1, round(float(spec.input.resolution) / float(np.median(mpps))))


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Per-class Dice, recall, precision, confusion matrix and rare-class maxima on ``data``.

    The tiles get the stain normalisation and tissue-mask handling the checkpoint recorded.
    A dataset of the 8 GBM regions is folded into the classes of a checkpoint trained on them
    folded (``extra["classes_folded_from"]``); items finer than the checkpoint's working
    resolution are shrunk to it and scored whole.

    Raises
    ------
    DataError
        The dataset's class map differs from the checkpoint's classes, or bad tiles.
    """
    spec = loaded.spec
    folded_from = (spec.extra or {}).get("classes_folded_from")
    fold = None
    if folded_from and same_classes(data.class_map, folded_from) \
            and not same_classes(data.class_map, spec.classes):
        fold = fold_lookup(folded_from, spec.classes, rest="cellular tumour")
    elif not same_classes(data.class_map, spec.classes):
        raise DataError(f"{data.path}: class map {data.class_map} does not agree with the "
                        f"classes of checkpoint {loaded.path} {list(spec.classes)}")
    everything = np.arange(len(data.items))
    multiple = getattr(loaded.model, "size_multiple", 1)
    factor = _working_factor(spec, data)
    check_tiles(data, everything, multiple if factor == 1 else 1)
    prep = prep_for_spec(spec, data)
    prep.fold = fold
    prep.fit_slides(everything)
    if factor == 1:
        samples: TorchDataset = TileData(prep, everything, spec, False)
    else:
        samples, batch_size = SectionCrops(prep, everything, spec, factor=factor,
                                           size_multiple=multiple), 1
    loader = DataLoader(samples, batch_size=batch_size)
    model = loaded.model.to(device)
    return evaluate_segmentation(model, loader, device, spec.classes, rare_classes(spec.classes),
                                 len(loader)).summary
