"""Tests for napari_neuroseg.models.instance_metrics on hand-made cases with known values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_neuroseg.models.instance_metrics import (
    aggregated_jaccard_index,
    dice,
    instance_overlaps,
    match_instances,
    panoptic_quality,
)


def _canvas() -> np.ndarray:
    return np.zeros((10, 10), dtype=np.int32)


def test_dice_known_values():
    true, pred = _canvas(), _canvas()
    true[0:2, 0:2] = 1  # 4 px
    pred[0:2, 1:3] = 7  # 4 px, 2 shared; any non-zero label is foreground
    assert dice(true, pred) == pytest.approx(2 * 2 / 8)
    assert dice(true, true) == 1.0
    assert dice(true, _canvas()) == 0.0
    assert dice(_canvas(), _canvas()) == 1.0


def test_instance_overlaps_with_non_consecutive_ids():
    true, pred = _canvas(), _canvas()
    true[0:2, 0:2] = 5
    pred[0:2, 1:3] = 40
    pred[9, 9] = 3
    ov = instance_overlaps(true, pred)
    assert ov.true_ids.tolist() == [5] and ov.pred_ids.tolist() == [3, 40]
    assert ov.true_areas.tolist() == [4] and ov.pred_areas.tolist() == [1, 4]
    assert ov.pred_ids[ov.pair_pred].tolist() == [40]
    assert ov.intersection.tolist() == [2] and ov.union.tolist() == [6]


def test_aji_known_value():
    true, pred = _canvas(), _canvas()
    true[0:2, 0:2] = 1  # G1, 4 px
    true[4:6, 4:6] = 5  # G2, 4 px
    pred[0:2, 1:3] = 3  # S1: |G1 & S1| = 2, |G1 | S1| = 6
    pred[4:6, 4:6] = 7  # S2 == G2: 4 / 4
    pred[8, 0:3] = 9  # S3: never chosen, 3 px
    # AJI = (2 + 4) / (6 + 4 + 3)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(6 / 13)
    true[8:10, 8:10] = 2  # G3 with no overlapping prediction: +4 to the denominator
    assert aggregated_jaccard_index(true, pred) == pytest.approx(6 / 17)


def test_aji_counts_a_prediction_chosen_twice_twice():
    true, pred = _canvas(), _canvas()
    true[0, 0:2], true[0, 2:4] = 1, 2
    pred[0, 0:4] = 1  # best match of both, IoU 0.5 each
    # C = 2 + 2, U = 4 + 4
    assert aggregated_jaccard_index(true, pred) == pytest.approx(0.5)


def test_aji_edge_cases():
    true = _canvas()
    true[2:4, 2:4] = 1
    assert aggregated_jaccard_index(true, true) == 1.0
    assert aggregated_jaccard_index(true, _canvas()) == 0.0
    assert aggregated_jaccard_index(_canvas(), true) == 0.0
    assert aggregated_jaccard_index(_canvas(), _canvas()) == 1.0


def test_panoptic_quality_known_value():
    true, pred = _canvas(), _canvas()
    true[0, 0:5] = 1  # A, 5 px
    pred[0, 0:4] = 2  # A', IoU 4 / 5 = 0.8  -> TP
    true[3, 0:3] = 2  # B, no prediction     -> FN
    pred[5, 0:3] = 8  # C, no true instance  -> FP
    before = (true.copy(), pred.copy())
    pq = panoptic_quality(true, pred)
    assert (pq.tp, pq.fp, pq.fn) == (1, 1, 1)
    assert pq.dq == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert pq.sq == pytest.approx(0.8)
    assert pq.pq == pytest.approx(0.4)
    np.testing.assert_array_equal(true, before[0])
    np.testing.assert_array_equal(pred, before[1])


def test_panoptic_quality_threshold_is_strict_and_empty_images_are_perfect():
    true, pred = _canvas(), _canvas()
    true[0, 0:4] = 1
    pred[0, 0:2] = 1  # IoU exactly 0.5: not a match
    pq = panoptic_quality(true, pred)
    assert (pq.tp, pq.fp, pq.fn, pq.dq, pq.sq, pq.pq) == (0, 1, 1, 0.0, 0.0, 0.0)
    empty = panoptic_quality(_canvas(), _canvas())
    assert (empty.dq, empty.sq, empty.pq) == (1.0, 1.0, 1.0)


def test_match_instances_is_one_to_one_below_half():
    true, pred = _canvas(), _canvas()
    true[0, 0:3], true[0, 3:6] = 4, 2
    pred[0, 0:6] = 9  # IoU 0.5 with both: one match only
    true_ids, pred_ids, iou = match_instances(true, pred, iou_threshold=0.2)
    assert len(true_ids) == 1 and pred_ids.tolist() == [9] and iou.tolist() == [0.5]
    pq = panoptic_quality(true, pred, iou_threshold=0.2)
    assert (pq.tp, pq.fp, pq.fn) == (1, 0, 1)


def test_match_instances_returns_label_values_sorted_by_true_id():
    true, pred = _canvas(), _canvas()
    true[0:2, 0:2], true[5:7, 5:7] = 8, 3
    pred[5:7, 5:7], pred[0:2, 0:2] = 11, 20
    true_ids, pred_ids, iou = match_instances(true, pred)
    assert true_ids.tolist() == [3, 8] and pred_ids.tolist() == [11, 20]
    assert iou.tolist() == [1.0, 1.0]


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="integer"):
        aggregated_jaccard_index(np.zeros((2, 2)), np.zeros((2, 2)))
