"""Pseudo-labelling for the ``nuclei-tiles`` task (the LeNet nuclei-tile recipe's
semi-supervised cycles, docs/training-recipes.md).

The recipe: "Use trained model to label unlabeled tiles; confidence thresholding to ensure
quality pseudo-labels; iterative refinement over multiple cycles." A pool tile is accepted
when its highest softmax probability is strictly above the threshold, and gets the arg-max
class. The selection of a cycle is written to ``cycle-K/pseudo_labels.json`` before the cycle
trains, so ``--resume`` retrains on exactly the same tiles.

The threshold is relative to what the loss lets the network say (:func:`effective_threshold`):
with label smoothing ``eps`` over ``K`` classes the cross-entropy is smallest at a probability
of ``1 - eps + eps / K`` for the true class (0.95 for the recipe's 0.1 over two classes), so
a raw threshold of 0.95 would accept almost nothing; 0.95 of that ceiling (0.9025) accepts the
tiles the network is nearly as sure of as it can be.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.spec import ModelSpec
from training.loop import Trainer
from training.runfolder import RunFolder, atomic_write_json
from training.tasks._common import DataError
from training.tasks.nuclei_tiles.data import TileData, TileSource
from training.tasks.nuclei_tiles.metrics import predict_probabilities

__all__ = [
    "BestWeights",
    "NoPseudoLabelsWarning",
    "PseudoLabels",
    "effective_threshold",
    "max_smoothed_probability",
    "pseudo_label",
    "report_pseudo_labels",
    "select_pseudo_labels",
]


class NoPseudoLabelsWarning(UserWarning):
    """A pseudo-labelling cycle accepted no tile: it trains on the labelled tiles only."""


def max_smoothed_probability(label_smoothing: float, n_classes: int) -> float:
    """The probability of the true class at which label-smoothed cross-entropy is smallest.

    Parameters
    ----------
    label_smoothing : float
        ``eps`` in [0, 1): the target is ``1 - eps + eps / K`` for the true class and
        ``eps / K`` for the others.
    n_classes : int
        ``K`` (at least 2).

    Returns
    -------
    float
        ``1 - eps + eps / K`` (1.0 without smoothing).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    if n_classes < 2:
        raise ValueError(f"need at least two classes, got {n_classes}")
    return 1.0 - label_smoothing + label_smoothing / n_classes


def effective_threshold(threshold: float, label_smoothing: float, n_classes: int,
                        relative: bool = True) -> float:
    """The probability a pool tile's confidence must exceed.

    Parameters
    ----------
    threshold : float
        The configured confidence threshold, in [0, 1).
    label_smoothing : float
        The training loss's label smoothing.
    n_classes : int
    relative : bool
        True: ``threshold`` is a fraction of :func:`max_smoothed_probability` (0.95 with
        smoothing 0.1 over two classes gives 0.9025); False: a raw softmax probability.

    Returns
    -------
    float
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"confidence threshold must be in [0, 1), got {threshold}")
    if not relative:
        return float(threshold)
    return float(threshold * max_smoothed_probability(label_smoothing, n_classes))


def select_pseudo_labels(probabilities: Any, threshold: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The confident predictions of a pool.

    Parameters
    ----------
    probabilities : array-like (N, C)
        Softmax outputs on the unlabelled tiles.
    threshold : float
        A tile is kept when its highest probability is strictly above this, in [0, 1).

    Returns
    -------
    indices, labels, confidences : numpy.ndarray
        Positions of the kept tiles in the pool, their arg-max classes and probabilities.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"confidence threshold must be in [0, 1), got {threshold}")
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (N, C), got shape {probs.shape}")
    confidence = probs.max(1) if len(probs) else np.zeros(0)
    keep = np.flatnonzero(confidence > threshold)
    return keep.astype(np.int64), probs[keep].argmax(1).astype(np.int64), confidence[keep]


@dataclass(frozen=True)
class PseudoLabels:
    """The pseudo-labels of one cycle.

    Attributes
    ----------
    indices : numpy.ndarray
        Positions of the accepted tiles in the pool.
    labels : numpy.ndarray
        Their classes.
    confidences : numpy.ndarray
        Their highest softmax probability.
    tile_ids : tuple of str
        Their ids in the pool (for people reading the JSON).
    pool_size : int
    threshold : float
        The probability the confidences were compared with (:func:`effective_threshold`).
    """

    indices: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray
    tile_ids: tuple[str, ...]
    pool_size: int
    threshold: float

    def counts(self, class_names: Sequence[str]) -> dict[str, int]:
        """Accepted tiles per class name (every class listed, 0 when none)."""
        found = np.bincount(self.labels, minlength=len(class_names))
        return {name: int(found[c]) for c, name in enumerate(class_names)}

    def entries(self, pool: TileSource) -> list[tuple[TileSource, int, int]]:
        """``(pool, index, label)`` entries for :class:`TileData`."""
        return [(pool, int(i), int(y)) for i, y in zip(self.indices, self.labels, strict=True)]

    def save(self, path: Path) -> Path:
        """Write the selection as JSON (atomically)."""
        return atomic_write_json(path, {
            "pool_size": self.pool_size, "threshold": self.threshold,
            "tiles": [{"index": int(i), "id": t, "label": int(y), "confidence": float(c)}
                      for i, t, y, c in zip(self.indices, self.tile_ids, self.labels,
                                            self.confidences, strict=True)],
        })

    @classmethod
    def load(cls, path: Path, pool: TileSource) -> PseudoLabels:
        """Read a selection written by :meth:`save`, checking it against ``pool``.

        Raises
        ------
        DataError
            The pool changed since the selection was made (size or tile ids differ).
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        tiles = data["tiles"]
        indices = np.array([t["index"] for t in tiles], dtype=np.int64)
        ids = tuple(t["id"] for t in tiles)
        if data["pool_size"] != len(pool) or any(pool.tile_id(int(i)) != t
                                                 for i, t in zip(indices, ids, strict=True)):
            raise DataError(f"{path}: the unlabelled pool changed since this cycle started "
                            "(other tiles); resume with the same pool, or start a new run")
        return cls(indices, np.array([t["label"] for t in tiles], dtype=np.int64),
                   np.array([t["confidence"] for t in tiles], dtype=np.float64), ids,
                   int(data["pool_size"]), float(data["threshold"]))


def pseudo_label(model: nn.Module, pool: TileSource, spec: ModelSpec, device: torch.device,
                 threshold: float, batch_size: int = 32) -> PseudoLabels:
    """Predict every tile of ``pool`` with ``model`` and keep the confident ones."""
    loader = DataLoader(TileData.from_source(pool, None, spec), batch_size=batch_size)
    probs, _ = predict_probabilities(model.to(device), loader, device)
    indices, labels, confidences = select_pseudo_labels(probs, threshold)
    return PseudoLabels(indices, labels, confidences, tuple(pool.tile_id(int(i))
                                                            for i in indices),
                        len(pool), float(threshold))


class BestWeights:
    """Epoch-start callback keeping a copy of the best epoch's weights in memory.

    At the start of epoch ``e`` the model holds the weights of epoch ``e - 1``; they are
    copied when the Trainer has just marked ``e - 1`` as best. :meth:`state` then gives the
    best weights without reading a checkpoint file (which, under DDP, only rank 0 writes).
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def __call__(self, trainer: Trainer, epoch: int) -> None:
        """Copy the weights when the previous epoch was the best so far."""
        if trainer.best_epoch is not None and trainer.best_epoch == epoch - 1 \
                and self.epoch != epoch - 1:
            self.epoch = epoch - 1
            self.weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def state(self, trainer: Trainer, run: RunFolder | None) -> dict[str, torch.Tensor]:
        """The best epoch's weights (the current ones if it was the last epoch run).

        A resumed run whose best epoch came before the interruption reads them from
        ``run``'s best checkpoint.
        """
        epochs = trainer.history.get("epoch", [])
        if trainer.best_epoch is None or (epochs and trainer.best_epoch == epochs[-1]):
            return trainer.model.state_dict()
        if self.epoch == trainer.best_epoch and self.weights is not None:
            return self.weights
        if run is not None and run.best.with_suffix(".safetensors").is_file():
            return load_checkpoint(run.best, device="cpu").model.state_dict()
        return trainer.model.state_dict()


def report_pseudo_labels(cycle: int, chosen: PseudoLabels, class_names: Sequence[str],
                         emit: bool = True) -> str:
    """The line saying how many pseudo-labels cycle ``cycle`` adds (printed when ``emit``).

    A cycle that adds none also raises a :class:`NoPseudoLabelsWarning` (when ``emit``): the
    cycle then only retrains on the labelled tiles.

    Returns
    -------
    str
        The line.
    """
    counts = ", ".join(f"{k}: {v}" for k, v in chosen.counts(class_names).items())
    line = (f"nuclei-tiles: cycle {cycle} adds {len(chosen.indices)} pseudo-labels of "
            f"{chosen.pool_size} pool tiles ({counts}; confidence > {chosen.threshold:.4f})")
    if emit:
        print(line, flush=True)
        if not len(chosen.indices):
            warnings.warn(
                f"nuclei-tiles: cycle {cycle} accepted no pseudo-label: no pool tile has a "
                f"confidence above {chosen.threshold:.4f}; the cycle trains on the labelled "
                "tiles only. Lower confidence_threshold, train the supervised stage longer, "
                "or check that the pool holds tiles like the labelled ones",
                NoPseudoLabelsWarning, stacklevel=2)
    return line
