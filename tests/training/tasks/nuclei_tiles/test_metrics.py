"""Tests for training.tasks.nuclei_tiles.metrics (tile-classification metrics)."""

import numpy as np
import pytest

from training.tasks.nuclei_tiles.metrics import tile_metrics

NAMES = ["NO_NUCLEUS", "NUCLEI"]


def _probs(pred):
    return np.eye(2)[np.asarray(pred)] * 0.8 + 0.1


def test_balanced_accuracy_is_the_mean_recall_not_the_accuracy():
    # 8 NO_NUCLEUS (6 right), 2 NUCLEI (2 right): accuracy 0.8, recalls 0.75 and 1.0
    labels = [0] * 8 + [1] * 2
    pred = [0] * 6 + [1] * 2 + [1] * 2
    found = tile_metrics(labels, _probs(pred), NAMES)
    assert found["accuracy"] == pytest.approx(0.8)
    assert found["balanced_accuracy"] == pytest.approx((6 / 8 + 2 / 2) / 2)
    assert found["confusion_matrix"] == [[6, 2], [0, 2]]


def test_a_constant_classifier_has_balanced_accuracy_one_half():
    labels = [0] * 9 + [1]
    found = tile_metrics(labels, _probs([0] * 10), NAMES)
    assert found["accuracy"] == pytest.approx(0.9)
    assert found["balanced_accuracy"] == pytest.approx(0.5)
    assert found["f1"] == pytest.approx(0.0)


def test_balanced_accuracy_counts_only_the_classes_present():
    found = tile_metrics([1, 1, 1], _probs([1, 1, 0]), NAMES)
    assert found["balanced_accuracy"] == pytest.approx(2 / 3)
    assert found["auc"] is None
    empty = tile_metrics([], np.zeros((0, 2)), NAMES)
    assert empty["balanced_accuracy"] is None
