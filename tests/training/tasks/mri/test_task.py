"""``python -m training mri`` end to end: Kaggle-layout data -> one epoch -> a loadable model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.runner import ModelRunner
from training.cli import main

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, kaggle_lgg_dataset):
    return kaggle_lgg_dataset(tmp_path_factory.mktemp("lgg"), n_slices=4, size=64)


def test_one_epoch_gives_a_checkpoint_the_plugin_loads(dataset, tmp_path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text("base_features: 4\nbatch_size: 4\naugment: true\n")
    run = tmp_path / "run"
    code = main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                 "--device", "cpu", "--config", str(config), "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "effective configuration" in printed and "base_features: 4" in printed
    assert json.loads((run / "config.json").read_text())["base_features"] == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["slice_dice"] <= 1.0 and metrics["val_patients"] == 1
    assert (run / "report.md").read_text().count("slice_dice") >= 1
    loaded = load_checkpoint(run / "checkpoints" / "best")
    assert loaded.spec.name == "mri-flair-unet" and loaded.spec.arch_kwargs["base_features"] == 4
    probs = ModelRunner(loaded.model, loaded.spec, device="cpu")(
        np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32) * 255)
    assert probs.shape == (1, 2, 64, 64)


def test_a_dataset_of_another_task_is_refused_before_training(tmp_path):
    from napari_neuroseg.dataset import DatasetWriter

    with DatasetWriter(tmp_path / "tiles", "nuclei-tiles", "HE", {0: "NO_NUCLEUS",
                                                                   1: "NUCLEI"}) as writer:
        writer.add(np.zeros((16, 16, 3), np.uint8), label=1, patient_id="p")
    with pytest.raises(ValueError, match="task 'nuclei-tiles', not 'mri'"):
        main(["mri", "--data", str(tmp_path / "tiles"), "--epochs", "1", "--device", "cpu"])


def test_evaluate_reports_mri_metrics_for_a_checkpoint(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--device", "cpu",
          "--seed", "3", "--config", str(_small_config(tmp_path))])
    capsys.readouterr()
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(run / "checkpoints" / "best"), "--data",
                 str(dataset), "--device", "cpu", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "mri" and metrics["items"] == 16
    assert metrics["model"] == "mri-flair-unet"
    assert 0.0 <= metrics["slice_dice"] <= 1.0 and 0.0 <= metrics["volume_dice"] <= 1.0
    assert json.loads(capsys.readouterr().out)["slice_dice"] == metrics["slice_dice"]
    patients = sorted(Dataset.open(dataset).patients())[:2]
    code = main(["evaluate", "--model", str(run / "checkpoints" / "best"), "--data",
                 str(dataset), "--device", "cpu", "--patients", ",".join(patients)])
    subset = json.loads(capsys.readouterr().out)
    assert code == 0 and 0 < subset["items"] < 16
    assert subset["items"] == sum(len(Dataset.open(dataset).patients()[p]) for p in patients)


def _small_config(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text("base_features: 4\nbatch_size: 4\naugment: false\nnum_workers: 0\n")
    return config


def test_torchrun_two_gloo_processes_run_the_task_end_to_end(dataset, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "training", "mri", "--data", str(dataset), "--out", str(run), "--epochs", "2",
         "--device", "cpu", "--seed", "0", "--config", str(_small_config(tmp_path))],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("effective configuration") == 1  # rank 0 only
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [0, 1]
    loaded = load_checkpoint(run / "checkpoints" / "last")
    assert loaded.spec.name == "mri-flair-unet"
    assert json.loads((run / "metrics.json").read_text())["val_patients"] == 1


def test_two_runs_with_the_same_seed_give_identical_metrics(dataset, tmp_path, capsys):
    results = []
    for name in ("a", "b"):
        run = tmp_path / name
        main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--device",
              "cpu", "--seed", "5", "--config", str(_small_config(tmp_path))])
        results.append(json.loads((run / "history.json").read_text()))
    for key in ("train_loss", "val_loss", "slice_dice"):
        assert results[0][key] == results[1][key]


def test_a_training_split_without_lesions_is_refused(tmp_path):
    from napari_neuroseg.dataset import DatasetWriter

    with DatasetWriter(tmp_path / "empty", "mri", "MR", {0: "background",
                                                         1: "FLAIR abnormality"}) as writer:
        for n in range(3):
            writer.add(np.zeros((32, 32, 3), np.uint8), mask=np.zeros((32, 32), np.uint8),
                       patient_id=f"p{n}")
    with pytest.raises(ValueError, match=r"1 \(FLAIR abnormality\) absent from the training"):
        main(["mri", "--data", str(tmp_path / "empty"), "--epochs", "1", "--device", "cpu"])


@pytest.mark.parametrize(("name", "architecture", "parameters"), [
    ("mri-flair-unet5", "unet", 7_765_985),            # the FLAIR MRI recipe's model 1 (7.8 M)
    ("mri-flair-unet4-triple", "unet", 10_654_401),    # the FLAIR MRI recipe's model 2 (10.7 M)
    ("mri-flair-transunet", "transunet", 6_006_497),
    ("mri-flair-unet5-cpu", "unet", 487_289),
    ("mri-flair-unet4-triple-cpu", "unet", 167_897),
    ("mri-flair-transunet-cpu", "transunet", 1_214_585),
])
def test_shipped_configs_build_the_seed_networks(name, architecture, parameters, dataset):
    """The six configs select their network through ``model``, ``base_features`` and
    ``arch`` (the 4-floor triple-convolution U-Net was not selectable before)."""
    from napari_neuroseg.models.registry import ModelRegistry
    from training.config import build_config
    from training.tasks.mri.task import Config, _spec

    config = build_config(Config, REPO / "training" / "configs" / f"{name}.yaml", {})
    spec = _spec(config, Dataset.open(dataset))
    assert spec.architecture == architecture
    model = ModelRegistry().build(spec)
    assert sum(p.numel() for p in model.parameters()) == parameters
    if "unet4" in name:
        assert spec.arch_kwargs["depth"] == 4 and list(spec.arch_kwargs["deep_convs"]) == [
            2, 2, 3, 3]


def test_samples_per_epoch_and_set_options_reach_the_run(dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                 "--device", "cpu", "--set", "base_features=2", "--set", "samples_per_epoch=6",
                 "--set", "batch_size=3", "--set", "arch={depth: 3}",
                 "--set", "folds=2", "--set", "fold=1"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["samples_per_epoch"], config["arch"], config["fold"]) == (6, {"depth": 3}, 1)
    history = json.loads((run / "history.json").read_text())
    assert len(history["train_loss"]) == 1
    loaded = load_checkpoint(run / "checkpoints" / "last")
    assert loaded.spec.arch_kwargs["depth"] == 3


def test_val_fraction_zero_trains_on_every_patient(dataset, tmp_path):
    """The final model, after cross-validation: no patient held out, the last epoch kept."""
    run = tmp_path / "run"
    assert main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                 "--device", "cpu", "--set", "base_features=2", "--set", "val_fraction=0",
                 "--set", "monitor=train_loss", "--set", "mode=min"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train_patients"], metrics["val_patients"]) == (4, 0)
    assert "0 validation patients" in (run / "report.md").read_text()
    loaded = load_checkpoint(run / "checkpoints" / "last")
    assert loaded.spec.name == "mri-flair-unet"
    assert len(loaded.spec.extra["training_patients"]) == 4  # provenance in the sidecar


def test_cosine_schedule_lowers_the_rate_each_epoch(dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "2",
                 "--device", "cpu", "--set", "base_features=2", "--set", "lr=0.001",
                 "--set", "lr_schedule=cosine", "--set", "samples_per_epoch=4"]) == 0
    rates = [row[0] for row in json.loads((run / "history.json").read_text())["lr"]]
    assert rates == pytest.approx([1e-3, 5e-4])
    with pytest.raises(ValueError, match="lr_schedule must be"):
        main(["mri", "--data", str(dataset), "--out", str(tmp_path / "bad"), "--epochs", "1",
              "--device", "cpu", "--set", "base_features=2", "--set", "lr_schedule=step"])


def test_prior_bias_starts_the_background_at_the_abnormal_share():
    """From bias 0 every pixel starts at p = 0.5; at the prior a 1 % share starts at 1 %."""
    import torch

    from napari_neuroseg.models.unet import UNet
    from training.tasks.mri.task import prior_bias

    model = UNet(3, 1, depth=2, base_features=2)
    assert prior_bias(model, {0: 99, 1: 1}) == pytest.approx(np.log(0.01 / 0.99))
    assert torch.sigmoid(model.head.bias).item() == pytest.approx(0.01)
    assert prior_bias(model, {0: 10, 1: 0}) == pytest.approx(np.log(1e-4 / (1 - 1e-4)))
    two_class = UNet(3, 2, depth=2, base_features=2)
    before = two_class.head.bias.detach().clone()
    assert prior_bias(two_class, {0: 99, 1: 1}) == 0.0  # not a binary head: left alone
    assert torch.equal(two_class.head.bias, before)
