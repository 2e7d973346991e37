"""Nucleus-type scores as the HoVer-Net paper reports them: F1 per type and multi-class PQ.

Both are pooled over all tiles of an evaluation (the counts are summed, then divided), so a
tile with few nuclei weighs as much as its nuclei:

* **F1 per type** ``t`` (Graham et al. 2019, eq. 6, with the weights of their code,
  ``compute_stats.py``): over the matched pairs (IoU > 0.5, :func:`match_instances`) in which
  the true or the predicted type is ``t``, ``F_t = 2 TP / (2 TP + 2 FP + 2 FN + FP_d + FN_d)``
  with ``TP`` pairs typed ``t`` on both sides, ``FP`` / ``FN`` pairs with ``t`` on one side
  only, and ``FP_d`` / ``FN_d`` unmatched predicted / true nuclei of type ``t``. The paper
  pairs nuclei by centroid distance; here the pairs are those of PQ.
* **Detection F1**: ``2 TP / (2 TP + FP + FN)`` of the matched pairs, types ignored.
* **Multi-class PQ** (``mpq``): for each type, PQ between the true nuclei of that type and the
  predicted nuclei of that type (TP, FP, FN and IoU summed over tiles: "mPQ+" as in the CoNIC
  challenge), then the mean over types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from napari_neuroseg.models.instance_metrics import instance_overlaps, match_instances

__all__ = ["TypedTile", "type_scores"]

#: ``(true instances, {true id: type}, predicted instances, {predicted id: type})``.
TypedTile = tuple[np.ndarray, Mapping[int, int], np.ndarray, Mapping[int, int]]


def _typed_subset(labels: np.ndarray, types: Mapping[int, int], t: int) -> np.ndarray:
    keep = np.zeros(int(labels.max()) + 1, bool)
    for key, value in types.items():
        if value == t and int(key) < keep.size:
            keep[int(key)] = True
    return np.where(keep[labels], labels, 0)


def type_scores(tiles: Iterable[TypedTile], type_names: Mapping[int, str]) -> dict[str, Any]:
    """F1 per type, detection F1 and multi-class PQ over typed tiles.

    Parameters
    ----------
    tiles : iterable of TypedTile
    type_names : mapping
        ``{type id: name}`` of the nucleus types to score (background excluded).

    Returns
    -------
    dict
        ``f1_<name>`` per type, ``f1_detection``, ``pq_<name>`` per type, ``mpq`` (their
        mean) and ``n_tiles``; a type no nucleus has (true or predicted) scores None.
    """
    names = {int(k): v for k, v in type_names.items() if int(k) > 0}
    counts = {t: np.zeros(5) for t in names}  # tp, fp, fn, fp_d, fn_d
    pq_sums = {t: np.zeros(4) for t in names}  # tp, fp, fn, iou
    det = np.zeros(3)
    n_tiles = 0
    for true, true_types, pred, pred_types in tiles:
        n_tiles += 1
        true_ids, pred_ids, _ = match_instances(true, pred)
        ov = instance_overlaps(true, pred)
        det += (len(true_ids), ov.pred_ids.size - len(pred_ids), ov.true_ids.size - len(true_ids))
        paired_t = np.array([true_types.get(int(i), 0) for i in true_ids])
        paired_p = np.array([pred_types.get(int(i), 0) for i in pred_ids])
        lone_t = [true_types.get(int(i), 0) for i in set(ov.true_ids.tolist()) - set(
            true_ids.tolist())]
        lone_p = [pred_types.get(int(i), 0) for i in set(ov.pred_ids.tolist()) - set(
            pred_ids.tolist())]
        for t in names:
            counts[t] += (np.sum((paired_t == t) & (paired_p == t)),
                          np.sum((paired_t != t) & (paired_p == t)),
                          np.sum((paired_t == t) & (paired_p != t)),
                          lone_p.count(t), lone_t.count(t))
            sub_t, sub_p = _typed_subset(true, true_types, t), _typed_subset(pred, pred_types, t)
            m_true, _, iou = match_instances(sub_t, sub_p)
            ov_t = instance_overlaps(sub_t, sub_p)
            pq_sums[t] += (len(m_true), ov_t.pred_ids.size - len(m_true),
                           ov_t.true_ids.size - len(m_true), float(iou.sum()))
    out: dict[str, Any] = {}
    for t, name in names.items():
        tp, fp, fn, fp_d, fn_d = counts[t]
        den = 2 * tp + 2 * fp + 2 * fn + fp_d + fn_d
        out[f"f1_{name}"] = float(2 * tp / den) if den else None
    tp, fp, fn = det
    out["f1_detection"] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None
    per_type = []
    for t, name in names.items():
        tp, fp, fn, iou = pq_sums[t]
        if tp + fp + fn == 0:
            out[f"pq_{name}"] = None
            continue
        value = (tp / (tp + 0.5 * fp + 0.5 * fn)) * (iou / tp if tp else 0.0)
        out[f"pq_{name}"] = float(value)
        per_type.append(value)
    out["mpq"] = float(np.mean(per_type)) if per_type else None
    out["n_tiles"] = n_tiles
    return out
