"""build_spec: declared specs (never the shipped checkpoints' ones) and the training data."""

from pathlib import Path
from types import SimpleNamespace

from napari_neuroseg.models import registry as registry_module
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import DEFAULT_SPECS, ModelRegistry
from training.tasks._common import build_spec, training_data_name


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
