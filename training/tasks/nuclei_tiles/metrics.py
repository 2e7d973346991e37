"""Tile-classification metrics and plots of the ``nuclei-tiles`` task (the LeNet
nuclei-tile recipe, docs/training-recipes.md).

The recipe reports accuracy and "Precision, Recall, F1-Score (weighted averages)" with a
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

__all__ = [
    "POSITIVE",
    "TrainAccuracy",
    "plot_learning_curves",
    "predict_probabilities",
    "scalar_metrics",
    "tile_metrics",
    "tile_plots",
]

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


class TrainAccuracy:
    """A Trainer ``forward`` that also counts correct arg-max predictions while training.

    The Trainer logs only the training loss; the recipe's learning curves also show the
    training accuracy (on the augmented tiles, with dropout on, as Keras-style running
    accuracy is). :meth:`take` gives the share since the last call and starts again; under
    DDP it is the share of this rank's batches.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(logits, labels) -> scalar tensor``.
    """

    def __init__(self, loss_fn: Any) -> None:
        self.loss_fn = loss_fn
        self.correct = 0
        self.total = 0

    def __call__(self, model: nn.Module, batch: Any, device: torch.device
                 ) -> tuple[torch.Tensor, int]:
        """The loss of one ``(tiles, labels, indices)`` batch and its size."""
        x, y = batch[0].to(device), batch[1].to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        if model.training:
            self.correct += int((logits.detach().argmax(1) == y).sum())
            self.total += int(y.numel())
        return self.loss_fn(logits, y), int(y.numel())

    def take(self) -> float | None:
        """Correct share of the training tiles seen since the last call (None if none)."""
        value = self.correct / self.total if self.total else None
        self.correct = self.total = 0
        return value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _first_lr(value: Any) -> float:
    return float(value[0] if isinstance(value, list | tuple) else value)


def plot_learning_curves(history: dict[str, list[Any]], path: Path) -> Path:
    """The recipe's diagnostic plots: accuracy, the train/validation gap and the learning rate.

    Parameters
    ----------
    history : dict
        Per-epoch rows with ``epoch``, ``lr`` (one value per parameter group; the first is
        drawn), ``train_loss``, ``val_loss``, ``train_accuracy`` and ``accuracy`` (validation);
        ``cycle`` (optional) draws the cycle boundaries.
    path : pathlib.Path
        The PNG to write (atomically).

    Returns
    -------
    pathlib.Path
    """
    plt = _pyplot()
    epochs = list(history.get("epoch", range(len(history.get("train_loss", [])))))
    fig, (ax_acc, ax_gap, ax_lr) = plt.subplots(1, 3, figsize=(14, 4))

    def series(key: str) -> list[float]:
        return [np.nan if v is None else float(v) for v in history.get(key, [])]

    for key, label in (("train_accuracy", "training"), ("accuracy", "validation")):
        if history.get(key):
            ax_acc.plot(epochs[: len(history[key])], series(key), marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    train_acc, val_acc = np.array(series("train_accuracy")), np.array(series("accuracy"))
    if train_acc.size and train_acc.size == val_acc.size:
        ax_gap.plot(epochs[: train_acc.size], train_acc - val_acc, marker="o",
                    label="accuracy: training - validation")
    train_loss, val_loss = np.array(series("train_loss")), np.array(series("val_loss"))
    if train_loss.size and train_loss.size == val_loss.size:
        ax_gap.plot(epochs[: train_loss.size], val_loss - train_loss, marker="o",
                    label="loss: validation - training")
    ax_gap.axhline(0.0, color="grey", linewidth=0.8)
    ax_gap.set(xlabel="epoch", title="train / validation gap (overfitting)")
    if history.get("lr"):
        ax_lr.plot(epochs[: len(history["lr"])], [_first_lr(v) for v in history["lr"]],
                   marker="o", color="tab:green")
        ax_lr.set_yscale("log")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    cycles = history.get("cycle") or []
    for k in range(1, len(cycles)):
        if cycles[k] != cycles[k - 1]:
            for ax in (ax_acc, ax_gap, ax_lr):
                ax.axvline(epochs[k] - 0.5, color="grey", linestyle="--", linewidth=0.8)
    for ax in (ax_acc, ax_gap):
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
