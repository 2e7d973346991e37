"""Plots and the short ``report.md`` of a run (matplotlib with the Agg backend, no display).

The rare-class probability histograms are there because the seeds found that recall alone
hides failures: a class can reach a fair recall while its probabilities sit just above the
decision boundary, or collapse for a subset of slides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.runfolder import RunFolder, atomic_write_text

__all__ = [
    "plot_confusion_matrix",
    "plot_history",
    "plot_per_class_recall",
    "plot_probability_histograms",
    "write_report",
]

_NOT_METRICS = {"epoch", "lr", "seconds", "train_loss", "val_loss"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def _numeric_series(history: Mapping[str, Sequence[Any]]) -> dict[str, list[float]]:
    out = {}
    for key, values in history.items():
        if key in _NOT_METRICS or not values:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = [float(v) for v in values]
    return out


def plot_history(history: Mapping[str, Sequence[Any]], path: Path) -> Path:
    """Loss curves (left) and every other numeric per-epoch value (right)."""
    plt = _pyplot()
    epochs = list(history.get("epoch", range(len(history.get("train_loss", [])))))
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        if history.get(key):
            ax_loss.plot(epochs, history[key], marker="o", label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend(loc="best")
    metrics = _numeric_series(history)
    for key, values in metrics.items():
        ax_metric.plot(epochs[: len(values)], values, marker="o", label=key)
    ax_metric.set(xlabel="epoch", title="validation metrics")
    if metrics:
        ax_metric.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_confusion_matrix(matrix: Any, class_names: Sequence[str], path: Path, *,
                          normalize: bool = True) -> Path:
    """Confusion matrix (rows = truth), row-normalised by default, with counts annotated."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    shown = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) \
        if normalize else counts
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)"
           if normalize else "confusion matrix")
    for i in ticks:
        for j in ticks:
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black")
    return _save(fig, path)


def plot_per_class_recall(recall: Mapping[str, float | None], path: Path) -> Path:
    """Bar chart of each class's recall (absent classes shown as empty bars labelled n/a)."""
    plt = _pyplot()
    names = list(recall)
    values = [np.nan if recall[n] is None else float(recall[n]) for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 2), 3.5))
    ax.bar(names, np.nan_to_num(values), color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, (0 if np.isnan(v) else v) + 0.02, "n/a" if np.isnan(v) else f"{v:.2f}",
                ha="center", fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel="recall", title="per-class recall")
    return _save(fig, path)


def plot_probability_histograms(probabilities: Any, labels: Any, class_names: Sequence[str],
                                rare_classes: Sequence[int], path: Path, bins: int = 20
                                ) -> Path:
    """For each rare class, histograms of its predicted probability on samples (or pixels)
    of that class and on all others.

    Parameters
    ----------
    probabilities : array (N, C)
        Softmax outputs per sample or pixel.
    labels : array (N,)
        True classes.
    class_names : sequence of str
    rare_classes : sequence of int
        Classes to show, e.g. IT and LE for the LGG tissue task.
    path : pathlib.Path
    bins : int
    """
    plt = _pyplot()
    probs, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels).ravel()
    rare = list(rare_classes) or [int(np.argmin(np.bincount(y, minlength=probs.shape[1])))]
    fig, axes = plt.subplots(1, len(rare), figsize=(4.5 * len(rare), 3.5), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for ax, c in zip(axes[0], rare, strict=True):
        for mask, label, colour in ((y == c, f"true {class_names[c]}", "tab:red"),
                                    (y != c, "other classes", "tab:gray")):
            if mask.any():
                ax.hist(probs[mask, c], bins=edges, alpha=0.6, density=True, label=label,
                        color=colour)
        ax.set(xlabel=f"p({class_names[c]})", ylabel="density", title=class_names[c])
        ax.legend(fontsize="small")
    return _save(fig, path)


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metrics_table(metrics: Mapping[str, Any]) -> list[str]:
    lines = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for sub, val in value.items():
                if not isinstance(val, (Mapping, list)):
                    lines.append(f"| {key}/{sub} | {_format(val)} |")
        elif not isinstance(value, list):
            lines.append(f"| {key} | {_format(value)} |")
    return lines


def write_report(run: RunFolder, *, title: str, metrics: Mapping[str, Any],
                 history: Mapping[str, Sequence[Any]] | None = None,
                 plots: Sequence[Path] = (), notes: Sequence[str] = ()) -> Path:
    """Write ``report.md``: title, epochs run, best epoch, final metrics table, plot links.

    Returns
    -------
    pathlib.Path
        The report.
    """
    lines = [f"# {title}", ""]
    if history and history.get("epoch"):
        lines.append(f"Epochs run: {len(history['epoch'])}.")
        if history.get("val_loss"):
            best = int(np.argmin(history["val_loss"]))
            lines.append(f"Lowest validation loss {history['val_loss'][best]:.4f} at epoch "
                         f"{history['epoch'][best]}.")
        lines.append("")
    lines += [*notes, ""] if notes else []
    lines += ["## Final metrics", "", *_metrics_table(metrics), ""]
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            rel = Path(plot).relative_to(run.root) if Path(plot).is_absolute() else Path(plot)
            lines.append(f"![{Path(plot).stem}]({rel.as_posix()})")
        lines.append("")
    return atomic_write_text(run.report, "\n".join(lines))
