"""ModelSource: which weights a run uses, from a checkpoint file or a registry name."""

import pickle

import pytest

from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.source import ModelSource, ModelSourceError


def test_registry_model_without_weights_needs_random_weights():
    with pytest.raises(ModelSourceError, match="no trained weights"):
        ModelSource("ct-metastasis").spec()  # ships no weights
    with pytest.raises(ModelSourceError, match="unknown model"):
        ModelSource("no-such-model").spec()
    assert ModelSource("ct-metastasis", random_weights=True).spec().name == "ct-metastasis"
    assert ModelSource("ct-metastasis", random_weights=True).key() == "ct-metastasis:random-seed0"


def test_checkpoint_file_gives_its_spec_and_a_weights_key(tmp_path):
    registry = ModelRegistry(bundled=False)
    spec = registry.get("nuclei-lenet")
    path = save_checkpoint(tmp_path / "lenet", registry.build(spec), spec)
    source = ModelSource(str(path), device="cpu")
    assert source.checkpoint == path
    assert source.spec().name == spec.name
    assert source.key().startswith(f"{spec.name}:") and "random" not in source.key()
    assert pickle.loads(pickle.dumps(source)) == source  # sent to dask workers as it is
