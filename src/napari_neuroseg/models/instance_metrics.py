"""Segmentation metrics: Dice, Aggregated Jaccard Index and Panoptic Quality.

Every function takes ``(true, pred)`` in that order and leaves its inputs untouched. Instance
images are integer label images, 0 = background; ids need not be consecutive. Overlaps are
counted sparsely (only pairs of instances that share pixels), so whole tiles with thousands of
nuclei cost memory proportional to the pixels, not to ``n_true * n_pred``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class PanopticQuality:
    """Panoptic quality ``pq = dq * sq`` of one image (Kirillov et al., 2019).

    Attributes
    ----------
    dq : float
        Detection quality ``TP / (TP + FP / 2 + FN / 2)``.
    sq : float
        Segmentation quality: mean IoU of the matched pairs (0 without matches).
    pq : float
        ``dq * sq``.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched true instances.
    """

    dq: float
    sq: float
    pq: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class Overlaps:
    """Pairs of overlapping instances and their areas (output of :func:`instance_overlaps`).

    Attributes
    ----------
    true_ids, pred_ids : numpy.ndarray
        All instance ids of each image (sorted).
    true_areas, pred_areas : numpy.ndarray
        Pixel counts, aligned with the ids.
    pair_true, pair_pred : numpy.ndarray
        Indices into ``true_ids`` / ``pred_ids`` of every overlapping pair.
    intersection, union : numpy.ndarray
        Pixel counts of every pair.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    intersection: np.ndarray
    union: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        """Intersection over union of every pair."""
        return self.intersection / self.union


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient ``2 |T & P| / (|T| + |P|)`` of two masks (non-zero = foreground).

    Returns 1.0 when both masks are empty.
    """
    t, p = _pair(true, pred)
    t, p = t != 0, p != 0
    total = int(t.sum()) + int(p.sum())
    return 1.0 if total == 0 else 2.0 * int((t & p).sum()) / total


def instance_overlaps(true: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Areas of all instances and intersections / unions of all overlapping pairs.

    Parameters
    ----------
    true, pred : numpy.ndarray of int, same shape
        Instance label images.

    Returns
    -------
    Overlaps
    """
    t, p = _pair(true, pred)
    true_ids, true_inv = _ids(t)
    pred_ids, pred_inv = _ids(p)
    true_areas = np.bincount(true_inv[true_inv >= 0], minlength=true_ids.size)
    pred_areas = np.bincount(pred_inv[pred_inv >= 0], minlength=pred_ids.size)
    both = (true_inv >= 0) & (pred_inv >= 0)
    keys = true_inv[both].astype(np.int64) * max(pred_ids.size, 1) + pred_inv[both]
    pairs, intersection = np.unique(keys, return_counts=True)
    pair_true, pair_pred = np.divmod(pairs, max(pred_ids.size, 1))
    union = true_areas[pair_true] + pred_areas[pair_pred] - intersection
    return Overlaps(true_ids, pred_ids, true_areas, pred_areas, pair_true, pair_pred,
                    intersection, union)  # fmt: skip


def aggregated_jaccard_index(true: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al., 2017).

    Each true instance ``G_i`` is paired with the prediction ``S_j`` of highest IoU;
    ``AJI = sum |G_i & S_j| / (sum |G_i | S_j| + sum of the areas of predictions never
    chosen)``. A true instance with no overlapping prediction adds its area to the
    denominator. Returns 1.0 when both images are empty.
    """
    ov = instance_overlaps(true, pred)
    if ov.true_ids.size == 0 and ov.pred_ids.size == 0:
        return 1.0
    best = _best_pair_per_true(ov)
    matched_true = ov.pair_true[best]
    used_pred = np.zeros(ov.pred_ids.size, dtype=bool)
    used_pred[ov.pair_pred[best]] = True
    unmatched_true = np.ones(ov.true_ids.size, dtype=bool)
    unmatched_true[matched_true] = False
    numerator = int(ov.intersection[best].sum())
    denominator = (
        int(ov.union[best].sum())
        + int(ov.true_areas[unmatched_true].sum())
        + int(ov.pred_areas[~used_pred].sum())
    )
    return numerator / denominator


def match_instances(
    true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of true and predicted instances with IoU above a threshold.

    For ``iou_threshold >= 0.5`` the matching is unique (two instances cannot both overlap one
    instance by more than half); below it, pairs are chosen by maximal total IoU (Hungarian).

    Returns
    -------
    true_ids, pred_ids, iou : numpy.ndarray
        Matched pairs (label values) and their IoU, sorted by true id.
    """
    ov = instance_overlaps(true, pred)
    iou = ov.iou
    keep = iou > iou_threshold
    pair_true, pair_pred, iou = ov.pair_true[keep], ov.pair_pred[keep], iou[keep]
    if iou_threshold < 0.5 and iou.size:
        pair_true, pair_pred, iou = _hungarian(pair_true, pair_pred, iou)
    order = np.argsort(pair_true, kind="stable")
    return ov.true_ids[pair_true[order]], ov.pred_ids[pair_pred[order]], iou[order]


def panoptic_quality(
    true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5
) -> PanopticQuality:
    """Panoptic quality with its detection and segmentation parts.

    Parameters
    ----------
    true, pred : numpy.ndarray of int
        Instance label images of the same shape.
    iou_threshold : float
        A pair is a true positive when its IoU exceeds this (0.5 in the paper).

    Returns
    -------
    PanopticQuality
        With both images empty, ``dq = sq = pq = 1`` (nothing to find, nothing found).
    """
    ov = instance_overlaps(true, pred)
    _, _, iou = match_instances(true, pred, iou_threshold)
    tp = int(iou.size)
    fp, fn = int(ov.pred_ids.size) - tp, int(ov.true_ids.size) - tp
    if tp + fp + fn == 0:
        return PanopticQuality(1.0, 1.0, 1.0, 0, 0, 0)
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou.sum()) / tp if tp else 0.0
    return PanopticQuality(dq=dq, sq=sq, pq=dq * sq, tp=tp, fp=fp, fn=fn)


def _pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true), np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(f"true and pred must have the same shape, got {t.shape} and {p.shape}")
    return t, p


def _ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted non-zero ids and, per pixel, the index of its id (-1 on background)."""
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"instance images must be integer label images, got {labels.dtype}")
    values, inverse = np.unique(labels.ravel(), return_inverse=True)
    if values.size and values[0] == 0:
        return values[1:], inverse - 1
    return values, inverse


def _best_pair_per_true(ov: Overlaps) -> np.ndarray:
    """Index of the highest-IoU pair of every true instance that overlaps something."""
    if ov.pair_true.size == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((-ov.iou, ov.pair_true))
    first = np.r_[True, ov.pair_true[order][1:] != ov.pair_true[order][:-1]]
    return order[first]


def _hungarian(
    pair_true: np.ndarray, pair_pred: np.ndarray, iou: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, row_inv = np.unique(pair_true, return_inverse=True)
    cols, col_inv = np.unique(pair_pred, return_inverse=True)
    matrix = np.zeros((rows.size, cols.size))
    matrix[row_inv, col_inv] = iou
    r, c = linear_sum_assignment(matrix, maximize=True)
    chosen = matrix[r, c] > 0
    return rows[r[chosen]], cols[c[chosen]], matrix[r[chosen], c[chosen]]
