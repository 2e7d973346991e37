"""Nuclei in IHC through the translation: detection F1, and one ``evaluate`` run of three
methods on a tiny synthetic case (random tiny translator, the shipped H&E nuclei model)."""

import json

import numpy as np
import pytest
import torch

from napari_neuroseg.dataset import DatasetWriter
from napari_neuroseg.models.checkpoint import load_checkpoint, save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from training.cli import main
from training.tasks._common import DataError, build_spec
from training.tasks.stain.ihc_nuclei import (
    detection_counts,
    detection_scores,
    ihc_nuclei_comparison,
    translate_tile,
)

SIZE = 64


def _discs(centres, radius=4, size=SIZE):
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 < radius**2] = k
    return labels


def test_detection_matches_centroids_one_to_one_within_the_radius():
    true = _discs([(10, 10), (10, 40), (40, 25)])
    pred = _discs([(12, 10), (10, 43), (40, 25), (55, 55)])
    assert detection_counts(true, pred, radius_px=4) == (3, 1, 0)
    assert detection_counts(true, pred, radius_px=1) == (1, 3, 2)
    # two found nuclei near one true nucleus: only one may match it
    assert detection_counts(_discs([(20, 20)]), _discs([(20, 17), (20, 24)], 2), 5) == (1, 1, 0)
    assert detection_counts(true, np.zeros_like(true), 4) == (0, 0, 3)
    scores = detection_scores(3, 1, 0)
    assert scores["f1"] == pytest.approx(6 / 7) and scores["recall"] == 1.0
    assert detection_scores(0, 0, 0)["f1"] is None


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    torch.manual_seed(0)
    spec = build_spec("ihc-to-he", {"base_features": 4, "n_blocks": 1})
    stem = tmp_path_factory.mktemp("model") / "ihc-to-he"
    save_checkpoint(stem, ModelRegistry(bundled=False).build(spec), spec)
    return stem


@pytest.fixture(scope="module")
def ihc_tiles(tmp_path_factory):
    """Two IHC-coloured tiles at 0.5 µm/px with blue nuclei and their instance masks."""
    path = tmp_path_factory.mktemp("ihc") / "data"
    with DatasetWriter(path, "stain", "IHC", {0: "background", 1: "nucleus"}) as writer:
        for k, centres in enumerate(([(16, 16), (16, 46), (46, 30)], [(20, 20), (44, 44)])):
            labels = _discs(centres, radius=7)
            image = np.where(labels[..., None] > 0, np.array([70, 90, 170]),
                             np.array([225, 215, 200])).astype(np.uint8)
            writer.add(image, labels, item_id=f"t{k}", patient_id=f"p{k}", mpp=0.5,
                       domain="A", split="test")
    return path


def test_translate_tile_runs_at_the_working_resolution(translator):
    from napari_neuroseg.models.runner import ModelRunner

    loaded = load_checkpoint(translator)
    runner = ModelRunner(loaded.model, loaded.spec, device="cpu", batch_size=1)
    out = translate_tile(runner, np.zeros((62, 62, 3), np.uint8), mpp=0.25)
    assert out.shape == (31, 31, 3) and out.dtype == np.uint8  # 0.25 -> 0.5 µm/px


def test_comparison_scores_three_methods_on_the_same_tiles(translator, ihc_tiles):
    from napari_neuroseg.dataset import Dataset

    result = ihc_nuclei_comparison(load_checkpoint(translator), Dataset.open(ihc_tiles),
                                   torch.device("cpu"))
    assert list(result["rows"]) == ["nuclei-hovernet on raw IHC",
                                    "nuclei-hovernet on translated H&E",
                                    "classical on raw IHC"]
    assert result["tiles"] == ["t0", "t1"]
    for row in result["rows"].values():
        assert row["nuclei_true"] == 5 and row["n_images"] == 2
        assert row["tp"] + row["fn"] == 5
        assert row["f1"] is None or 0.0 <= row["f1"] <= 1.0
    assert result["rows"]["classical on raw IHC"]["f1"] > 0.5  # dark discs on pale ground
    assert "| classical on raw IHC |" in result["table"]


def test_evaluate_scores_the_nuclei_when_the_ihc_tiles_have_masks(translator, ihc_tiles,
                                                                   tmp_path, capsys):
    assert main(["evaluate", "--model", str(translator), "--data", str(ihc_tiles),
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert "| nuclei-hovernet on translated H&E |" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_a"] == 2
    assert set(metrics["nuclei"]["rows"]) >= {"classical on raw IHC"}


def test_no_ihc_masks_is_a_data_error(translator, tmp_path):
    from napari_neuroseg.dataset import Dataset

    path = tmp_path / "plain"
    with DatasetWriter(path, "stain", "IHC", {0: "background"}) as writer:
        writer.add(np.zeros((16, 16, 3), np.uint8), domain="A", patient_id="p")
    with pytest.raises(DataError, match="no IHC"):
        ihc_nuclei_comparison(load_checkpoint(translator), Dataset.open(path),
                              torch.device("cpu"))
