"""``python -m training mri`` end to end: Kaggle-layout data -> one epoch -> a loadable model."""

import json

import numpy as np
import pytest

from napari_neuroseg.dataset import convert_kaggle_lgg
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.samples.mri import write_lgg_patient
from training.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("lgg")
    for n in range(4):
        write_lgg_patient(root / "kaggle", patient_id=f"TCGA_XX_{n:04d}_20000101", n_slices=4,
                          size=64, seed=n)
    return convert_kaggle_lgg(root / "kaggle", root / "dataset").path


def test_one_epoch_gives_a_checkpoint_the_plugin_loads(dataset, tmp_path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text("base_features: 4\nbatch_size: 4\naugment: true\n")
    run = tmp_path / "run"
    code = main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                 "--device", "cpu", "--config", str(config), "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "effective configuration" in printed and "base_features: 4" in printed
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
