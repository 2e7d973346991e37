"""A nuclei checkpoint and the classical baseline scored on the same tiles, in one run."""

import json

import numpy as np
import pytest
import torch

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions, classical_nuclei
from napari_neuroseg.dataset import Dataset, DatasetWriter
from napari_neuroseg.models.checkpoint import load_checkpoint
from training.cli import main
from training.metrics import nuclei_metrics
from training.tasks._common import DataError, task_split
from training.tasks.nuclei.compare import (
    baseline_options,
    baseline_scores,
    compare,
    comparison_table,
    evaluation_indices,
)

KEYS = ("dice", "aji", "dq", "sq", "pq")


@pytest.fixture(scope="module")
def dataset(make_nuclei_dataset):
    """Six 96 px synthetic tiles of three patients (two tiles each)."""
    return make_nuclei_dataset(96, 40, (5, 9))


@pytest.fixture(scope="module")
def checkpoint(make_tiny_hovernet):
    """An untrained, tiny nuclei-hovernet checkpoint (post-processing saved in its spec)."""
    return make_tiny_hovernet({"np_threshold": 0.5, "marker_threshold": 0.4, "min_size": 8,
                               "ksize": 7})


def direct_baseline(data: Dataset, indices, options=None) -> dict:
    """The baseline's mean scores computed here, tile by tile, without the module."""
    rows = []
    for i in indices:
        item = data.items[int(i)]
        pred = classical_nuclei(data.read_image(item), options)
        scores = nuclei_metrics([data.read_mask(item)], [pred])
        rows.append([np.nan if scores[k] is None else scores[k] for k in KEYS])
    return dict(zip(KEYS, np.nanmean(np.asarray(rows, float), axis=0), strict=True))


def test_val_split_is_the_training_split(dataset):
    data = Dataset.open(dataset)
    indices, patients = evaluation_indices(data, "val", 0.2, 0)
    part = task_split(data, 0.2, 0)
    np.testing.assert_array_equal(indices, part.val_indices)
    assert patients == part.val_patients
    all_indices, all_patients = evaluation_indices(data, "all")
    assert list(all_indices) == list(range(6)) and len(all_patients) == 3
    with pytest.raises(ValueError, match="split"):
        evaluation_indices(data, "test")


def test_compare_has_both_rows_and_baseline_equals_direct_call(dataset, checkpoint):
    data = Dataset.open(dataset)
    loaded = load_checkpoint(checkpoint)
    result = compare(loaded, data, torch.device("cpu"), split="val", batch_size=2)
    assert list(result["rows"]) == ["nuclei-hovernet", "classical"]
    indices, _ = evaluation_indices(data, "val")
    assert result["tiles"] == [data.items[int(i)].id for i in indices]
    for row in result["rows"].values():
        assert row["n_images"] == len(indices)
        for key in KEYS:
            assert row[key] is None or 0.0 <= row[key] <= 1.0
    expected = direct_baseline(data, indices)
    for key in KEYS:
        assert result["rows"]["classical"][key] == pytest.approx(expected[key])
    # the synthetic nuclei are easy for the baseline
    assert result["rows"]["classical"]["dice"] > 0.8
    assert result["postprocess"]["ksize"] == 7
    assert "| classical |" in result["table"] and "| nuclei-hovernet |" in result["table"]


def test_baseline_options_change_the_baseline_row(dataset):
    data = Dataset.open(dataset)
    options = baseline_options(["mpp=1.0", "nucleus_radius_um=6", "min_size=None"])
    assert options == ClassicalNucleiOptions(mpp=1.0, nucleus_radius_um=6.0)
    row = baseline_scores(data, [0, 1], options)
    expected = direct_baseline(data, [0, 1], options)
    assert row["aji"] == pytest.approx(expected["aji"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        baseline_options(["radius"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        baseline_options(["unknown=1"])


def test_compare_rejects_other_tasks_and_baselines(tmp_path, checkpoint):
    with DatasetWriter(tmp_path / "seg", "nuclei-tiles", "HE",
                       {0: "NO_NUCLEUS", 1: "NUCLEI"}) as writer:
        writer.add(np.zeros((32, 32, 3), np.uint8), label=0, patient_id="p0")
    loaded = load_checkpoint(checkpoint)
    with pytest.raises(DataError, match="nuclei"):
        compare(loaded, Dataset.open(tmp_path / "seg"), torch.device("cpu"))
    with pytest.raises(ValueError, match="baseline"):
        compare(loaded, Dataset.open(tmp_path / "seg"), torch.device("cpu"), baseline="otsu")


def test_table_formats_missing_values():
    table = comparison_table({"m": {"dice": 0.5, "aji": None, "n_images": 2}})
    assert "| m | 0.500 | n/a |" in table


def test_command_line_prints_and_writes_both_rows(dataset, checkpoint, tmp_path, capsys):
    code = main(["evaluate", "--model", str(checkpoint), "--data", str(dataset), "--device",
                 "cpu", "--baseline", "classical", "--split", "val", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| classical |" in printed
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written["rows"]) == {"nuclei-hovernet", "classical"}
    assert written["split"] == "val" and written["model"] == "nuclei-hovernet"
    data = Dataset.open(dataset)
    indices, _ = evaluation_indices(data, "val")
    assert written["rows"]["classical"]["pq"] == pytest.approx(
        direct_baseline(data, indices)["pq"])
