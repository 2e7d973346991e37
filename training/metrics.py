"""Task metrics: segmentation, CT patient level, MRI slices/volumes, nuclei instances.

Conventions: a ratio whose denominator is zero is NaN (the class is absent from both truth
and prediction) and is written as ``null`` in JSON; means skip NaN. See docs/training-loop.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from napari_neuroseg.models import instance_metrics as im
from napari_neuroseg.models.patient_pool import patient_max_pool as max_pool_by_patient

__all__ = [
    "ConfusionMatrix",
    "MRIMetrics",
    "binary_metrics",
    "nuclei_metrics",
    "patient_max_pool",
    "patient_metrics",
    "roc_auc",
    "threshold_search",
]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _json_number(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


class ConfusionMatrix:
    """Confusion matrix accumulated over batches; rows = truth, columns = prediction.

    Parameters
    ----------
    n_classes : int
    ignore_index : int, optional
        Truth value to skip (e.g. unlabelled pixels).
    """

    def __init__(self, n_classes: int, ignore_index: int | None = None) -> None:
        self.n_classes, self.ignore_index = int(n_classes), ignore_index
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, true: Any, pred: Any) -> None:
        """Add a batch of integer labels (numpy arrays or tensors of the same shape).

        Raises
        ------
        ValueError
            Shapes differ or a label is outside ``[0, n_classes)``.
        """
        t, p = _numpy(true).ravel(), _numpy(pred).ravel()
        if t.shape != p.shape:
            raise ValueError(f"truth has {t.size} labels, prediction {p.size}")
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        for name, arr in (("truth", t), ("prediction", p)):
            if arr.size and (arr.min() < 0 or arr.max() >= self.n_classes):
                raise ValueError(f"{name} label outside 0..{self.n_classes - 1}")
        flat = t.astype(np.int64) * self.n_classes + p.astype(np.int64)
        self.matrix += np.bincount(flat, minlength=self.n_classes**2).reshape(self.matrix.shape)

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class ``dice``, ``recall``, ``precision`` and ``support`` (true count)."""
        tp = np.diag(self.matrix).astype(np.float64)
        true_count, pred_count = self.matrix.sum(1), self.matrix.sum(0)
        return {
            "dice": _ratio(2 * tp, true_count + pred_count),
            "recall": _ratio(tp, true_count),
            "precision": _ratio(tp, pred_count),
            "support": true_count,
        }

    def summary(self, class_names: Sequence[str] | None = None,
                skip_in_mean: Sequence[int] = ()) -> dict[str, Any]:
        """JSON-ready metrics: per-class values by name, means over classes, the matrix.

        Parameters
        ----------
        class_names : sequence of str, optional
            Default ``"0"``, ``"1"``, ...
        skip_in_mean : sequence of int
            Classes left out of the means (e.g. ``(0,)`` for background).
        """
        names = list(class_names or [str(i) for i in range(self.n_classes)])
        values = self.per_class()
        keep = [i for i in range(self.n_classes) if i not in set(skip_in_mean)]
        out: dict[str, Any] = {"classes": names, "confusion_matrix": self.matrix.tolist()}
        for key in ("dice", "recall", "precision"):
            out[key] = {n: _json_number(v) for n, v in zip(names, values[key], strict=True)}
            kept = values[key][keep]
            out[f"mean_{key}"] = _json_number(np.nanmean(kept)) if np.isfinite(kept).any() \
                else None
        out["support"] = {n: int(v) for n, v in zip(names, values["support"], strict=True)}
        out["accuracy"] = _json_number(_ratio(np.trace(self.matrix), self.matrix.sum()))
        return out


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U); ties count one half.

    Returns NaN when only one class is present.
    """
    y, s = _numpy(labels).astype(bool).ravel(), _numpy(scores).astype(np.float64).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def binary_metrics(labels: Any, predictions: Any) -> dict[str, Any]:
    """Counts, sensitivity, specificity, precision, F1 and accuracy of binary decisions."""
    y, p = _numpy(labels).astype(bool).ravel(), _numpy(predictions).astype(bool).ravel()
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    tn, fn = int((~y & ~p).sum()), int((y & ~p).sum())
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": _json_number(_ratio(tp, tp + fn)),
        "specificity": _json_number(_ratio(tn, tn + fp)),
        "precision": _json_number(_ratio(tp, tp + fp)),
        "f1": _json_number(_ratio(2 * tp, 2 * tp + fp + fn)),
        "accuracy": _json_number(_ratio(tp + tn, y.size)),
    }


def patient_max_pool(patient_ids: Sequence[Any], slice_scores: Any
                     ) -> tuple[list[Any], np.ndarray]:
    """Max of the slice scores (logits or probabilities) of each patient, in first-seen order.

    The arrays form of :func:`napari_neuroseg.models.patient_pool.patient_max_pool`.
    """
    pooled = max_pool_by_patient(_numpy(slice_scores), patient_ids)
    return list(pooled), np.fromiter(pooled.values(), dtype=np.float64, count=len(pooled))


def patient_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Patient-level metrics at ``threshold`` (positive when ``score >= threshold``) plus AUC."""
    s = _numpy(scores).astype(np.float64).ravel()
    out = binary_metrics(labels, s >= threshold)
    out["auc"] = _json_number(roc_auc(labels, s))
    out["threshold"] = float(threshold)
    return out


def threshold_search(labels: Any, scores: Any, thresholds: Any = None) -> dict[str, Any]:
    """The threshold that maximises F1 (ties: higher sensitivity + specificity, then lower
    threshold), with its sensitivity, specificity and AUC (:func:`patient_metrics`).

    Parameters
    ----------
    labels : array-like
        0/1 labels (one per patient).
    scores : array-like
        Finite scores; a patient is positive when ``score >= threshold``.
    thresholds : array-like, optional
        Candidates; by default every distinct score (the exact optimum). A grid such as
        ``np.arange(0.05, 1, 0.05)`` gives rounder values.
    """
    y = _numpy(labels).ravel()
    s = _numpy(scores).astype(np.float64).ravel()
    if s.size != y.size or s.size == 0:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    candidates = np.unique(s if thresholds is None else np.asarray(thresholds, np.float64))
    best: tuple[float, float, float] | None = None
    chosen: dict[str, Any] = {}
    for t in candidates:
        m = patient_metrics(y, s, float(t))
        key = (m["f1"] or 0.0, (m["sensitivity"] or 0.0) + (m["specificity"] or 0.0), -t)
        if best is None or key > best:
            best, chosen = key, m
    return chosen


class MRIMetrics:
    """Per-slice and per-volume Dice, false positives on empty slices (binary masks).

    Per-slice Dice of a slice empty in both truth and prediction is 1. ``slice_dice`` is the
    mean over all slices, ``slice_dice_nonempty`` over slices with a true abnormality;
    ``volume_dice`` pools the voxels of each volume, then averages over volumes;
    ``fp_empty_slices`` counts truly empty slices with any predicted pixel. A tumour slice
    (non-empty truth) is *detected* when the prediction overlaps its abnormality by at least
    one pixel: ``sensitivity_tumour_slices`` is detected / tumour slices, and
    ``fp_rate_empty_slices`` is ``fp_empty_slices`` / empty slices.
    """

    def __init__(self) -> None:
        self._slice: list[tuple[Any, int, int, int]] = []  # (volume, inter, true, pred)

    def update(self, true: Any, pred: Any, volume_ids: Sequence[Any]) -> None:
        """Add a batch of ``(N, H, W)`` masks and the volume (patient) id of each slice."""
        t, p = _numpy(true).astype(bool), _numpy(pred).astype(bool)
        if t.shape != p.shape or t.shape[0] != len(volume_ids):
            raise ValueError(f"shapes {t.shape}, {p.shape} and {len(volume_ids)} ids differ")
        axes = tuple(range(1, t.ndim))
        inter, ts, ps = (t & p).sum(axes), t.sum(axes), p.sum(axes)
        for vid, i, a, b in zip(volume_ids, inter, ts, ps, strict=True):
            self._slice.append((vid, int(i), int(a), int(b)))

    def compute(self) -> dict[str, Any]:
        """The metrics of everything added so far."""
        if not self._slice:
            return {}
        inter, ts, ps = (np.array([r[k] for r in self._slice]) for k in (1, 2, 3))
        dice = np.where(ts + ps == 0, 1.0, _ratio(2 * inter, ts + ps))
        vols: dict[Any, np.ndarray] = {}
        for vid, i, a, b in self._slice:
            vols[vid] = vols.get(vid, np.zeros(3, dtype=np.int64)) + np.array([i, a, b])
        vdice = [1.0 if a + b == 0 else 2 * i / (a + b) for i, a, b in vols.values()]
        empty = ts == 0
        return {
            "slice_dice": float(dice.mean()),
            "slice_dice_nonempty": _json_number(dice[~empty].mean()) if (~empty).any() else None,
            "volume_dice": float(np.mean(vdice)),
            "n_slices": int(ts.size), "n_volumes": len(vols),
            "empty_slices": int(empty.sum()),
            "fp_empty_slices": int((empty & (ps > 0)).sum()),
            "fp_empty_pixels": int(ps[empty].sum()),
            "fp_rate_empty_slices": _json_number((ps[empty] > 0).mean()) if empty.any() else None,
            "tumour_slices": int((~empty).sum()),
            "tumour_slices_detected": int((~empty & (inter > 0)).sum()),
            "sensitivity_tumour_slices":
                _json_number((inter[~empty] > 0).mean()) if (~empty).any() else None,
        }


def nuclei_metrics(true: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, Any]:
    """Mean binary Dice, AJI and PQ (with DQ, SQ) over pairs of instance label images."""
    rows = []
    for t, p in zip(true, pred, strict=True):
        pq = im.panoptic_quality(t, p)
        rows.append((im.dice(t > 0, p > 0), im.aggregated_jaccard_index(t, p),
                     pq.dq, pq.sq, pq.pq))
    if not rows:
        return {}
    means = np.nanmean(np.array(rows, dtype=np.float64), axis=0)
    keys = ("dice", "aji", "dq", "sq", "pq")
    out: dict[str, Any] = {k: _json_number(v) for k, v in zip(keys, means, strict=True)}
    out["n_images"] = len(rows)
    return out
