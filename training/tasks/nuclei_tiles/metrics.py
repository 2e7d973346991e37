"""Tile-classification metrics and plots of the ``nuclei-tiles`` task (seed 003).

Seed 003 reports accuracy and "Precision, Recall, F1-Score (weighted averages)" with a
confusion matrix. Both views are given: ``precision``/``recall``/``f1`` of the NUCLEI class
(class 1, the positive class the mask generation thresholds) and the support-weighted means
over both classes (``*_weighted``, scikit-learn's ``average="weighted"`` with
``zero_division=0``), plus the ROC AUC of p(NUCLEI) and the balanced accuracy (the mean of
the per-class recalls, scikit-learn's ``balanced_accuracy_score``: accuracy is inflated by
the larger class when the classes are unbalanced).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.metrics import ConfusionMatrix, binary_metrics, roc_auc
from training.report import (
    plot_confusion_matrix,
    plot_per_class_recall,
    plot_probability_histograms,
)

__all__ = ["POSITIVE", "predict_probabilities", "scalar_metrics", "tile_metrics", "tile_plots"]

#: Class id of NUCLEI, the positive class of the binary metrics.
POSITIVE = 1


def predict_probabilities(model: nn.Module, loader: Iterable, device: torch.device
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(N, C)`` and labels ``(N,)`` over a loader of
    ``(tiles, labels, indices)`` batches (the model is put in eval mode)."""
    model.eval()
    probs, labels = [], []
    with torch.inference_mode():
        for x, y, _ in loader:
            logits = model(x.to(device)).float()
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
            labels.append(y.numpy())
    if not probs:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64)


def _none_if_nan(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def tile_metrics(labels: Any, probabilities: Any, class_names: Sequence[str]
                 ) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (NUCLEI and weighted), AUC and the confusion matrix.

    Parameters
    ----------
    labels : array-like (N,)
        True class ids.
    probabilities : array-like (N, C)
        Softmax outputs; the prediction is the arg-max.
    class_names : sequence of str

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present),
        ``precision``, ``recall``, ``f1`` (class 1 positive), ``auc`` (of
        p(class 1); None when one class is absent), ``precision_weighted``,
        ``recall_weighted``, ``f1_weighted``, ``n_tiles``, ``classes``,
        ``confusion_matrix`` (rows truth), ``per_class_recall``, ``per_class_precision``,
        ``support``. Undefined ratios are None.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(class_names))
    pred = probs.argmax(1) if len(y) else np.zeros(0, np.int64)
    matrix = ConfusionMatrix(len(class_names))
    matrix.update(y, pred)
    summary = matrix.summary(class_names)
    per_class = matrix.per_class()
    support = per_class["support"].astype(np.float64)
    total = max(support.sum(), 1.0)
    positive = binary_metrics(y == POSITIVE, pred == POSITIVE)
    present = support > 0
    out: dict[str, Any] = {
        "accuracy": summary["accuracy"],
        "balanced_accuracy": float(np.mean(per_class["recall"][present]))
        if present.any() else None,
        "precision": positive["precision"], "recall": positive["sensitivity"], "f1": positive["f1"],
        "auc": _none_if_nan(roc_auc(y == POSITIVE, probs[:, POSITIVE])) if len(y) else None,
    }
    for name, key in (("precision", "precision"), ("recall", "recall"), ("f1", "dice")):
        values = np.nan_to_num(per_class[key], nan=0.0)
        out[f"{name}_weighted"] = float((values * support).sum() / total) if len(y) else None
    out.update(n_tiles=len(y), classes=list(class_names),
               confusion_matrix=summary["confusion_matrix"],
               per_class_recall=summary["recall"], per_class_precision=summary["precision"],
               support=summary["support"])
    return out


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric scalars of :func:`tile_metrics` (for history rows; None becomes NaN)."""
    out = {}
    for key, value in metrics.items():
        if value is None:
            out[key] = float("nan")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def tile_plots(metrics: dict[str, Any], labels: np.ndarray, probabilities: np.ndarray,
               rare_class: int, folder: Path) -> list[Path]:
    """Confusion matrix, per-class recall and probability histograms (of ``rare_class``)."""
    names = metrics["classes"]
    return [
        plot_confusion_matrix(metrics["confusion_matrix"], names,
                              folder / "confusion_matrix.png"),
        plot_per_class_recall(metrics["per_class_recall"], folder / "per_class_recall.png"),
        plot_probability_histograms(probabilities, labels, names, [rare_class],
                                    folder / "probability_histograms.png"),
    ]
