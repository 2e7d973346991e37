"""Nucleus-type scores (HoVer-Net's F1 per type, multi-class PQ) and the type loss."""

import numpy as np
import pytest
import torch

from training.tasks.nuclei.targets import IGNORE_TYPE, HoVerNetLoss
from training.tasks.nuclei.type_scores import type_scores

NAMES = {0: "background", 1: "a", 2: "b"}


def _tile():
    labels = np.zeros((20, 20), np.int64)
    labels[1:5, 1:5], labels[8:12, 8:12], labels[14:18, 2:6] = 1, 2, 3
    return labels


def test_perfect_types_score_one_and_swapped_types_score_zero():
    true = _tile()
    types = {1: 1, 2: 2, 3: 1}
    perfect = type_scores([(true, types, true, types)], NAMES)
    assert perfect["f1_a"] == perfect["f1_b"] == perfect["f1_detection"] == 1.0
    assert perfect["mpq"] == pytest.approx(1.0) and perfect["n_tiles"] == 1
    swapped = {1: 2, 2: 1, 3: 2}
    wrong = type_scores([(true, types, true, swapped)], NAMES)
    assert wrong["f1_a"] == wrong["f1_b"] == 0.0 and wrong["mpq"] == 0.0
    assert wrong["f1_detection"] == 1.0  # found, but wrongly typed


def test_f1_per_type_counts_misses_and_false_detections_once_and_type_errors_twice():
    true = _tile()
    pred = true.copy()
    pred[pred == 3] = 0  # nucleus 3 (type a) missed
    pred[15:19, 12:16] = 4  # a false detection typed b
    scores = type_scores([(true, {1: 1, 2: 2, 3: 1}, pred, {1: 1, 2: 1, 4: 2})], NAMES)
    # type a: TP 1 (nucleus 1), FP 1 (nucleus 2 called a), FN_d 1 (nucleus 3 missed)
    assert scores["f1_a"] == pytest.approx(2 / (2 + 2 + 1))
    # type b: FN 1 (nucleus 2 called a), FP_d 1 (false detection)
    assert scores["f1_b"] == pytest.approx(0.0)
    assert scores["f1_detection"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_a_type_no_nucleus_has_scores_none():
    true = _tile()
    types = {1: 1, 2: 1, 3: 1}
    scores = type_scores([(true, types, true, types)], NAMES)
    assert scores["f1_b"] is None and scores["pq_b"] is None and scores["mpq"] == 1.0


def test_type_loss_uses_only_pixels_of_known_type():
    loss = HoVerNetLoss()
    outputs = {"np": torch.zeros(1, 2, 4, 4), "hv": torch.zeros(1, 2, 4, 4),
               "tp": torch.zeros(1, 3, 4, 4, requires_grad=True)}
    targets = {"np": torch.zeros(1, 4, 4, dtype=torch.long), "hv": torch.zeros(1, 2, 4, 4),
               "tp": torch.full((1, 4, 4), IGNORE_TYPE, dtype=torch.long)}
    assert float(loss.terms(outputs, targets)["tp_ce"].detach()) == 0.0
    targets["tp"][0, 0, 0] = 2
    value = float(loss.terms(outputs, targets)["tp_ce"].detach())
    assert value == pytest.approx(np.log(3), rel=1e-5)
    total = loss(outputs, targets)
    total.backward()
    assert outputs["tp"].grad is not None
    assert "train_tp_ce" in loss.pop_terms()
    del targets["tp"]
    assert "tp_ce" not in loss.terms(outputs, targets)
