"""A checkpoint trained on a known public set records that set's licence in its sidecar."""

import json

import pytest

from napari_neuroseg.dataset import Dataset, convert_kaggle_lgg
from napari_neuroseg.models.bundled import weights_provenance
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.samples.mri import write_lgg_patient
from training.cli import main
from training.tasks._common import build_spec, training_data_extra


def _lgg_dataset(root, source_folder):
    for n in range(4):
        write_lgg_patient(root / source_folder, patient_id=f"TCGA_XX_{n:04d}_20000101",
                          n_slices=3, size=32, seed=n)
    return convert_kaggle_lgg(root / source_folder, root / "dataset").path


@pytest.fixture(scope="module")
def kaggle_dataset(tmp_path_factory):
    """Converted from a folder named as the Kaggle release names it (``kaggle_3m``)."""
    return _lgg_dataset(tmp_path_factory.mktemp("lgg"), "kaggle_3m")


def test_a_run_on_the_kaggle_lgg_set_writes_its_licence_into_the_sidecar(kaggle_dataset,
                                                                         tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text("base_features: 4\nbatch_size: 4\n")
    run = tmp_path / "run"
    assert main(["mri", "--data", str(kaggle_dataset), "--out", str(run), "--epochs", "1",
                 "--device", "cpu", "--config", str(config), "--seed", "1"]) == 0
    best = run / "checkpoints" / "best"
    sidecar = json.loads(best.with_suffix(".json").read_text())
    record = sidecar["spec"]["extra"]["training_data_licence"]
    assert record["licence"] == "CC BY-NC-SA 4.0" and record["non_commercial"] is True
    loaded = load_checkpoint(best)
    assert weights_provenance(loaded.spec, best.with_suffix(".safetensors")).endswith(
        "data licence: CC BY-NC-SA 4.0, non-commercial use only")


def test_data_the_user_brings_records_no_licence(tmp_path):
    data = Dataset.open(_lgg_dataset(tmp_path, "my_patients"))
    assert set(training_data_extra(data)) == {"training_data"}
    assert "training_data_licence" not in build_spec("mri-flair-unet", data=data).extra
