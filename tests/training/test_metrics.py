"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.metrics import (
    ConfusionMatrix,
    MRIMetrics,
    binary_metrics,
    nuclei_metrics,
    patient_max_pool,
    patient_metrics,
    roc_auc,
    threshold_search,
)


def test_confusion_matrix_accumulates_and_gives_per_class_values():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    cm.update(torch.tensor([[1, 0]]), torch.tensor([[0, 0]]))
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    s = cm.summary(["bg", "a", "b"], skip_in_mean=(0,))
    assert s["dice"]["bg"] == pytest.approx(4 / 6)
    assert s["dice"]["a"] == pytest.approx(4 / 6)
    assert s["recall"]["a"] == pytest.approx(2 / 3) and s["precision"]["a"] == pytest.approx(2 / 3)
    assert s["recall"]["bg"] == pytest.approx(2 / 3)
    assert s["dice"]["b"] is None  # absent in truth and prediction
    assert s["mean_dice"] == pytest.approx(4 / 6)  # background skipped, absent class ignored
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["support"] == {"bg": 3, "a": 3, "b": 0}


def test_confusion_matrix_ignore_index_and_errors():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(np.array([0, 255, 1]), np.array([0, 1, 0]))
    assert cm.matrix.tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        cm.update(np.array([0, 1]), np.array([0]))


def test_roc_auc_rank_based_with_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 200), rng.random(200)
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]
    assert roc_auc(y, s) == pytest.approx(np.mean(pairs))


def test_binary_and_patient_metrics():
    m = binary_metrics([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(4 / 6)
    p = patient_metrics([1, 0, 1], [0.9, 0.2, 0.4], threshold=0.5)
    assert p["tp"] == 1 and p["fn"] == 1 and p["auc"] == pytest.approx(1.0)


def test_patient_max_pool():
    ids, pooled = patient_max_pool(["b", "a", "b", "a", "c"], [0.1, -2.0, 0.7, -1.0, 3.0])
    assert ids == ["b", "a", "c"]
    assert pooled.tolist() == [0.7, -1.0, 3.0]


def test_threshold_search_maximises_f1():
    labels = [0, 0, 1, 0, 1, 1]
    scores = [0.1, 0.3, 0.35, 0.6, 0.7, 0.9]
    best = threshold_search(labels, scores)
    # t=0.35 -> tp 3, fp 1: f1 6/7; t=0.7 -> tp 2, fp 0, fn 1: f1 4/5
    assert best["threshold"] == pytest.approx(0.35)
    assert best["f1"] == pytest.approx(6 / 7)
    assert best["sensitivity"] == 1.0 and best["specificity"] == pytest.approx(2 / 3)


def test_mri_metrics_slices_volumes_and_false_positives():
    t = np.zeros((3, 4, 4), bool)
    p = np.zeros((3, 4, 4), bool)
    t[0, :2] = True  # 8 px
    p[0, :1] = True  # 4 px: dice 8/12
    p[1, 0, 0] = True  # empty truth, one false pixel: dice 0
    m = MRIMetrics()
    m.update(t[:2], p[:2], ["v1", "v1"])
    m.update(t[2:], p[2:], ["v2"])  # empty/empty: dice 1
    out = m.compute()
    assert out["slice_dice"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert out["slice_dice_nonempty"] == pytest.approx(2 / 3)
    assert out["volume_dice"] == pytest.approx((8 / 13 + 1) / 2)
    assert out["fp_empty_slices"] == 1 and out["fp_empty_pixels"] == 1
    assert out["empty_slices"] == 2 and out["n_volumes"] == 2


def test_mri_metrics_count_detected_tumour_slices_and_false_positive_empty_slices():
    t = np.zeros((5, 4, 4), bool)
    t[0, :2, :2] = t[1, :2, :2] = t[2, 3, 3] = True  # three tumour slices, two empty
    p = np.zeros_like(t)
    p[0, 0, 0] = True  # overlaps: detected
    p[1, 3, 3] = True  # predicted beside the lesion only: not detected
    p[3, 1, 1] = True  # false positive on an empty slice
    m = MRIMetrics()
    m.update(t, p, ["a", "a", "b", "b", "c"])
    out = m.compute()
    assert out["tumour_slices"] == 3 and out["tumour_slices_detected"] == 1
    assert out["sensitivity_tumour_slices"] == pytest.approx(1 / 3)
    assert out["fp_empty_slices"] == 1 and out["fp_rate_empty_slices"] == pytest.approx(1 / 2)
    only_empty = MRIMetrics()
    only_empty.update(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool), ["a", "b"])
    out = only_empty.compute()
    assert out["sensitivity_tumour_slices"] is None and out["fp_rate_empty_slices"] == 0.0


def test_nuclei_metrics_reuse_instance_metrics():
    true = np.zeros((8, 8), np.int32)
    true[1:4, 1:4] = 1
    true[5:7, 5:7] = 2
    perfect = nuclei_metrics([true], [true.copy()])
    assert perfect["dice"] == 1.0 and perfect["aji"] == 1.0 and perfect["pq"] == 1.0
    pred = true.copy()
    pred[pred == 2] = 0  # one nucleus missed
    out = nuclei_metrics([true, true], [true, pred])
    assert out["dice"] == pytest.approx((1 + 18 / 22) / 2)
    assert out["dq"] == pytest.approx((1 + 1 / 1.5) / 2)
    assert out["n_images"] == 2


def _rates(predicted, labels):
    m = binary_metrics(labels, predicted)
    return m["f1"] or 0.0, m["sensitivity"] or 0.0, m["specificity"] or 0.0


def test_threshold_search_known_cases():
    perfect = threshold_search([0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.9])
    assert perfect["threshold"] == 0.3
    assert (perfect["f1"], perfect["sensitivity"], perfect["specificity"]) == (1.0, 1.0, 1.0)
    # Overlap: at 0.35 tp 2, fp 2, fn 0 -> F1 2/3; at 0.2 F1 4/7; at 0.6 F1 1/2.
    probs, labels = np.array([0.2, 0.35, 0.4, 0.6, 0.7]), np.array([0, 1, 0, 1, 0])
    res = threshold_search(labels, probs)
    best = max(_rates(probs >= t, labels)[0] for t in np.linspace(0, 1, 1001))
    assert res["f1"] == pytest.approx(best)
    assert res["f1"] == pytest.approx(2 / 3) and res["threshold"] == 0.35
    assert res["sensitivity"] == 1.0 and res["specificity"] == pytest.approx(1 / 3)


def test_threshold_search_grid_and_validation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(0.3 * labels + rng.normal(0.35, 0.2, 200), 0, 1)
    exact = threshold_search(labels, probs)
    grid = threshold_search(labels, probs, thresholds=np.arange(0.05, 1.0, 0.05))
    assert grid["f1"] <= exact["f1"] + 1e-12
    assert _rates(probs >= exact["threshold"], labels) == (
        exact["f1"], exact["sensitivity"], exact["specificity"])
    with pytest.raises(ValueError, match="0 or 1"):
        threshold_search([2], [0.5])
    with pytest.raises(ValueError, match="finite"):
        threshold_search([1], [np.nan])
