"""compare_with_start: a retrained checkpoint against the model it started from, same split."""

import json

import pytest

from napari_neuroseg.annotate.start_comparison import StartComparison, compare_with_start


def _checkpoint(tmp_path, metrics):
    (tmp_path / "best.json").write_text(json.dumps({"metrics": metrics}))
    return tmp_path / "best.safetensors"


def test_a_worse_model_is_not_at_least_as_good_and_both_numbers_are_shown(tmp_path):
    ckpt = _checkpoint(tmp_path, {"epoch": 0, "pq": 0.0, "monitor": "pq", "mode": "max",
                                  "validation": {"val_loss": 2.0, "pq": 0.0},
                                  "baseline": {"val_loss": 0.9, "pq": 0.612}})
    comparison = compare_with_start(ckpt)
    assert comparison == StartComparison("pq", "max", 0.0, 0.612)
    assert not comparison.at_least_as_good
    assert comparison.text() == "validation pq: new 0.000 vs start 0.612 (higher is better)"


@pytest.mark.parametrize(("new", "ok"), [(0.612, True), (0.7, True), (0.6, False)])
def test_equal_or_better_passes(tmp_path, new, ok):
    ckpt = _checkpoint(tmp_path, {"monitor": "pq", "mode": "max", "validation": {"pq": new},
                                  "baseline": {"pq": 0.612}})
    assert compare_with_start(ckpt).at_least_as_good is ok


def test_a_training_loss_monitor_is_compared_on_the_validation_loss(tmp_path):
    ckpt = _checkpoint(tmp_path, {"train_loss": 0.1, "monitor": "train_loss", "mode": "min",
                                  "validation": {"val_loss": 0.4, "slice_dice": 0.2},
                                  "baseline": {"val_loss": 0.5, "slice_dice": 0.1}})
    comparison = compare_with_start(ckpt)
    assert (comparison.metric, comparison.mode, comparison.new) == ("val_loss", "min", 0.4)
    assert comparison.at_least_as_good


def test_no_start_or_no_sidecar_is_never_at_least_as_good(tmp_path):
    ckpt = _checkpoint(tmp_path, {"pq": 0.5, "monitor": "pq", "mode": "max",
                                  "validation": {"pq": 0.5}, "baseline": None})
    comparison = compare_with_start(ckpt)
    assert comparison.start is None and not comparison.at_least_as_good
    assert "not measured" in comparison.text()
    missing = compare_with_start(tmp_path / "nothing" / "best.safetensors")
    assert missing.new is None and not missing.at_least_as_good
    nan = _checkpoint(tmp_path, {"monitor": "pq", "mode": "max",
                                 "validation": {"pq": float("nan")}, "baseline": {"pq": 0.1}})
    assert not compare_with_start(nan).at_least_as_good
