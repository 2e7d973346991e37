"""Task helpers: build_spec (declared specs, training data), task_split (one patient)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models import registry as registry_module
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import DEFAULT_SPECS, ModelRegistry
from training import events
from training.tasks._common import DataError, build_spec, task_split, training_data_name
from training.tasks.mri.split import mri_split


def test_build_spec_starts_from_the_declared_spec_and_records_the_data(tmp_path, monkeypatch):
    declared = DEFAULT_SPECS["nuclei-lenet"]
    small = build_spec("nuclei-lenet", {"input_size": 32})
    save_checkpoint(tmp_path / "nuclei-lenet", ModelRegistry().build(small), small)
    monkeypatch.setattr(registry_module, "bundled_weights_folder", lambda: tmp_path)
    assert ModelRegistry().get("nuclei-lenet").arch_kwargs["input_size"] == 32  # shipped

    data = SimpleNamespace(path=Path("/data/nuclei-lgg"), items=[0] * 36, modality="slide")
    spec = build_spec("nuclei-lenet", {"dropout": None}, data=data, synthetic=False,
                      extra={"stride": 64})
    assert spec.arch_kwargs == declared.arch_kwargs  # not the shipped width
    assert spec.extra == {"stride": 64, "training_data": "nuclei-lgg (36 slide items)"}
    assert training_data_name(data) == "nuclei-lgg (36 slide items)"
    assert "training_data" not in build_spec("nuclei-lenet").extra


@pytest.fixture(scope="module")
def one_patient_dataset(tmp_path_factory):
    """An ``mri`` export of a single synthetic LGG patient (6 slices), as Export writes it."""
    from napari_neuroseg.dataset import convert_kaggle_lgg
    from napari_neuroseg.samples.mri import write_lgg_patient

    root = tmp_path_factory.mktemp("one-patient")
    write_lgg_patient(root / "kaggle", patient_id="TCGA_XX_0000_20000101", n_slices=6,
                      size=32, seed=0)
    return Dataset.open(convert_kaggle_lgg(root / "kaggle", root / "dataset").path)


def test_one_patient_falls_back_to_an_item_split_with_a_warning(one_patient_dataset, capsys):
    data = one_patient_dataset
    heard = []
    with events.installed(heard.append):
        part = mri_split(data, 0.2, 0)  # stratified by tumour, as `python -m training mri`
    assert len(part.val_indices) >= 1 and len(part.train_indices) >= 1
    assert set(part.val_indices).isdisjoint(part.train_indices)
    assert sorted([*part.val_indices, *part.train_indices]) == list(range(len(data.items)))
    assert part.val_patients == part.train_patients == (data.items[0].patient_id,)
    assert [e["event"] for e in heard] == ["warning"]
    assert "one patient" in heard[0]["message"] and str(data.path) in heard[0]["message"]
    assert "warning: " in capsys.readouterr().err
    again = task_split(data, 0.2, 0)
    np.testing.assert_array_equal(again.val_indices, task_split(data, 0.2, 0).val_indices)


def test_one_item_of_one_patient_still_cannot_be_split(one_patient_dataset):
    full = one_patient_dataset
    data = Dataset(full.path, full.task, full.modality, dict(full.class_map), full.created,
                   full.items[:1])
    with pytest.raises(DataError, match="at least two patients, two items of one patient"):
        task_split(data, 0.2, 0)


def test_build_spec_takes_the_network_size_of_the_init_checkpoint(tmp_path):
    """Retraining from shipped weights (the GUI's Start from) failed: the declared default
    width did not fit the narrower shipped network (176 tensors differ)."""
    import dataclasses

    from napari_neuroseg.models.checkpoint import save_checkpoint
    from napari_neuroseg.models.registry import ModelRegistry
    from training.tasks._common import build_spec, init_weights

    registry = ModelRegistry(bundled=False)
    declared = registry.get("nuclei-hovernet")
    narrow = dataclasses.replace(declared, arch_kwargs={
        **declared.arch_kwargs, "base_features": 4, "encoder_depth": 2, "blocks_per_level": 1})
    init = save_checkpoint(tmp_path / "shipped", registry.build(narrow), narrow)
    spec = build_spec("nuclei-hovernet", {"base_features": None}, init=str(init))
    assert spec.arch_kwargs["base_features"] == 4 and spec.arch_kwargs["encoder_depth"] == 2
    init_weights(registry.build(spec), str(init))  # fits: no DataError
    wider = build_spec("nuclei-hovernet", {"base_features": 8}, init=str(init))
    assert wider.arch_kwargs["base_features"] == 8  # an explicit size still wins
    other = build_spec("mri-flair-unet", init=str(init))  # another network: its own defaults
    assert other.arch_kwargs == registry.get("mri-flair-unet").arch_kwargs
