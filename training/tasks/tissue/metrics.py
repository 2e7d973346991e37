"""Metrics and plots of the ``tissue`` task (the LGG tissue recipe, docs/training-recipes.md).

Per-class Dice, recall and precision, the confusion matrix and mean Dice come from
:meth:`training.metrics.ConfusionMatrix.summary`. The LGG tissue recipe found that accuracy hides
the rare classes and followed their highest predicted probability ("LE max probability 0.26 ->
0.79", "IT never exceeded 0.34"), so the maximum probability of every rare class over its own
pixels is reported too, and the probability histograms are drawn from a fixed random sample of the
validation pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.metrics import ConfusionMatrix
from training.report import (
    plot_confusion_matrix,
    plot_per_class_recall,
    plot_probability_histograms,
)
from training.tasks.tissue.data import IGNORE_INDEX

#: Validation pixels kept for the probability histograms.
HISTOGRAM_PIXELS = 200_000


@dataclass
class TissueEvaluation:
    """Everything one pass over a validation set gives.

    Attributes
    ----------
    summary : dict
        :meth:`ConfusionMatrix.summary` plus ``max_probability`` of the rare classes on
        their own pixels (None where a class has no pixel).
    probabilities, labels : numpy.ndarray
        The sampled pixels' softmax outputs ``(n, C)`` and true classes ``(n,)``.
    """

    summary: dict[str, Any]
    probabilities: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)


def evaluate_segmentation(model: torch.nn.Module, batches: Iterable, device: torch.device,
                          class_names: Sequence[str], rare_classes: Sequence[int],
                          n_batches: int | None = None, seed: int = 0) -> TissueEvaluation:
    """Run ``model`` over ``(x, y)`` batches and compute the task's metrics.

    Parameters
    ----------
    model : torch.nn.Module
        Gives ``(N, C, H, W)`` logits.
    batches : iterable of (Tensor, Tensor)
        Normalised images and masks (``IGNORE_INDEX`` pixels are skipped).
    class_names : sequence of str
    rare_classes : sequence of int
        Classes whose maximum probability is reported (leading edge, infiltrating tumour).
    n_batches : int, optional
        Number of batches, to spread the histogram sample over them.
    seed : int
        Seeds the histogram sample (the same pixels every epoch).
    """
    n = len(class_names)
    matrix = ConfusionMatrix(n, ignore_index=IGNORE_INDEX)
    top = np.full(n, -np.inf)
    per_batch = -(-HISTOGRAM_PIXELS // max(n_batches or 1, 1))
    rng = np.random.default_rng(seed)
    probs_kept, labels_kept = [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for x, y in batches:
            probs = torch.softmax(model(x.to(device)).float(), dim=1)
            probs = probs.movedim(1, -1).reshape(-1, n).cpu().numpy()
            truth = y.reshape(-1).numpy()
            matrix.update(truth, probs.argmax(1))
            valid = truth != IGNORE_INDEX
            for c in rare_classes:
                own = valid & (truth == c)
                if own.any():
                    top[c] = max(top[c], float(probs[own, c].max()))
            kept = np.flatnonzero(valid)
            if kept.size > per_batch:
                kept = rng.choice(kept, per_batch, replace=False)
            probs_kept.append(probs[kept])
            labels_kept.append(truth[kept])
    model.train(was_training)
    summary = matrix.summary(class_names)
    summary["max_probability"] = {class_names[c]: (float(top[c]) if np.isfinite(top[c])
                                                   else None) for c in rare_classes}
    return TissueEvaluation(
        summary,
        np.concatenate(probs_kept) if probs_kept else np.zeros((0, n), np.float32),
        np.concatenate(labels_kept) if labels_kept else np.zeros(0, np.int64),
    )


def epoch_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch history values: mean Dice, accuracy, per-class values, the matrix."""
    row: dict[str, Any] = {"mean_dice": _number(summary["mean_dice"]),
                           "accuracy": _number(summary["accuracy"])}
    for key in ("dice", "recall", "precision", "max_probability"):
        for name, value in summary[key].items():
            row[f"{key}/{name}"] = value
    row["confusion_matrix"] = summary["confusion_matrix"]
    return row


def _number(value: float | None) -> float:
    """A monitorable float (NaN when the metric is undefined)."""
    return float("nan") if value is None else float(value)


def write_plots(evaluation: TissueEvaluation, rare_classes: Sequence[int], folder: Path,
                prefix: str = "") -> list[Path]:
    """Confusion matrix, per-class recall and rare-class probability histograms in ``folder``."""
    summary = evaluation.summary
    names = summary["classes"]
    plots = [
        plot_confusion_matrix(summary["confusion_matrix"], names,
                              folder / f"{prefix}confusion_matrix.png"),
        plot_per_class_recall(summary["recall"], folder / f"{prefix}per_class_recall.png"),
    ]
    if evaluation.labels.size:
        plots.append(plot_probability_histograms(
            evaluation.probabilities, evaluation.labels, names, rare_classes,
            folder / f"{prefix}rare_class_probabilities.png"))
    return plots
