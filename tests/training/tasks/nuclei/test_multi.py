"""``python -m training nuclei`` on a folder of sources: a type branch, per-source scores,
evaluation at the model's resolution, post-processing tuned over sources."""

import json

import numpy as np
import pytest

from napari_neuroseg.models.checkpoint import load_checkpoint
from training.cli import main

from .test_sources import write_source

TINY = ("base_features: 4\nencoder_depth: 2\nblocks_per_level: 1\ncrop_size: 32\n"
        "batch_size: 4\nsamples_per_epoch: 8\nepochs: 1\nnum_workers: 0\nval_fraction: 0.5\n"
        "macenko_p: 0.5\nlr: 0.01\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_source(root, "forty", 0.25, typed=True, size=96, radii=(8, 12))
    write_source(root, "twenty", 0.5)
    config = root / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["nuclei", "--data", str(root), "--config", str(config), "--out", str(out),
                 "--device", "cpu"]) == 0
    return root, out


def test_training_on_sources_gives_a_typed_model_scored_per_source(run):
    _, out = run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sources"] == ["forty", "twenty"]
    for key in ("pq_forty", "pq_twenty", "aji_forty", "dice_twenty", "pq", "aji"):
        assert key in metrics
    assert metrics["tiles_forty"] == {"train": 2, "val": 2, "mpp": 0.25}
    loaded = load_checkpoint(out / "checkpoints" / "best")
    assert loaded.spec.arch_kwargs["n_types"] == 5
    assert loaded.spec.extra["type_classes"][:3] == ["background", "other", "inflammatory"]
    assert loaded.spec.extra["sources"]["forty"] == {"mpp": 0.25, "tiles": 4, "typed": True}
    assert loaded.spec.extra["training_data"].startswith("2 source(s): forty (4 tiles, 0.25 µm/px)")
    history = json.loads((out / "history.json").read_text())
    assert "train_tp_ce" in history and "pq_twenty" in history


def test_only_the_named_sources_train(run, tmp_path):
    root, _ = run
    config = tmp_path / "one.yaml"
    config.write_text(TINY + "sources: [twenty]\n")
    out = tmp_path / "run"
    assert main(["nuclei", "--data", str(root), "--config", str(config), "--out", str(out),
                 "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sources"] == ["twenty"] and "pq_forty" not in metrics
    spec = load_checkpoint(out / "checkpoints" / "best").spec
    assert spec.arch_kwargs["n_types"] is None and spec.extra["type_classes"] == []


def test_evaluate_on_the_sources_folder_scores_each_with_the_baseline_and_types(run, tmp_path,
                                                                               capsys):
    root, out = run
    assert main(["evaluate", "--model", str(out / "checkpoints" / "best"), "--data", str(root),
                 "--split", "val", "--baseline", "classical", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    assert "## forty (val)" in capsys.readouterr().out
    result = json.loads((tmp_path / "metrics.json").read_text())
    forty = result["sources"]["forty"]
    assert set(forty["rows"]) == {"nuclei-hovernet", "classical"}
    assert "mpq" in forty["rows"]["nuclei-hovernet"]["types"]
    assert "types" not in result["sources"]["twenty"]["rows"]["nuclei-hovernet"]
    # the baseline ran at each tile's own µm/px
    assert forty["rows"]["classical"]["nuclei_true"] > 0


def test_predictions_come_back_on_the_tiles_grid(run):
    root, out = run
    from napari_neuroseg.dataset import Dataset
    from training.tasks.nuclei.native import tile_maps

    data = Dataset.open(root / "forty")
    loaded = load_checkpoint(out / "checkpoints" / "best")
    maps = next(tile_maps(loaded, data, [0], "cpu"))
    assert maps.prob.shape == (48, 48) and maps.true.shape == (96, 96)
    labels, types = maps.instances({"np_threshold": 0.0, "marker_threshold": 0.5,
                                    "min_size": 1, "ksize": 3})
    assert labels.shape == (96, 96)
    assert set(types) == set(np.unique(labels[labels > 0]).tolist()) or not labels.any()


def test_tune_over_sources_averages_each_setting(run, tmp_path):
    root, out = run
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"np_threshold": 0.5}, {"np_threshold": 0.6, "ksize": 5}]))
    assert main(["tune-nuclei", "--model", str(out / "checkpoints" / "best"), "--data",
                 str(root), "--grid", str(grid), "--no-baseline", "--device", "cpu",
                 "--max-tiles", "1", "--out", str(tmp_path),
                 "--write", str(tmp_path / "tuned")]) == 0
    result = json.loads((tmp_path / "tune-nuclei.json").read_text())
    assert result["sources"] == ["forty", "twenty"] and len(result["grid"]) == 2
    assert [len(result["per_source"][s]["tiles"]) for s in result["sources"]] == [1, 1]
    for k, row in enumerate(result["grid"]):
        parts = [result["per_source"][s]["grid"][k]["pq"] for s in result["sources"]]
        assert row["pq"] == pytest.approx(np.mean([p for p in parts if p is not None]))
    tuned = load_checkpoint(tmp_path / "tuned")
    assert "mean over sources forty, twenty" in \
        tuned.spec.extra["postprocess_selection"]["method"]


def test_retraining_the_typed_model_on_one_dataset_keeps_its_types(run, tmp_path):
    from napari_neuroseg.models.runner import ModelRunner

    root, out = run
    config = tmp_path / "one.yaml"
    config.write_text("epochs: 1\nbatch_size: 2\ncrop_size: 32\nnum_workers: 0\n"
                      "val_fraction: 0.5\n")
    again = tmp_path / "again"
    assert main(["nuclei", "--data", str(root / "twenty"), "--config", str(config), "--out",
                 str(again), "--init", str(out / "checkpoints" / "best.safetensors"),
                 "--device", "cpu"]) == 0
    loaded = load_checkpoint(again / "checkpoints" / "best")
    assert loaded.spec.arch_kwargs["n_types"] == 5
    assert loaded.spec.extra["type_classes"] == \
        load_checkpoint(out / "checkpoints" / "best").spec.extra["type_classes"]
    runner = ModelRunner.from_checkpoint(again / "checkpoints" / "best.safetensors",
                                         device="cpu")
    assert runner.output_channels == 9
