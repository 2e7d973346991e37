"""The model picker: bundled weights, provenance, warnings and the model it starts on."""

import dataclasses

import pytest

from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import PREFERRED_MODELS, ModelRegistry
from napari_neuroseg.widgets._model_picker import FROM_FILE, ModelPicker

pytestmark = pytest.mark.gui


def _save(folder, name, synthetic=False, training_data=None, **arch):
    """A tiny checkpoint of declared model ``name`` (arch_kwargs shrunk by ``arch``)."""
    base = ModelRegistry(bundled=False).get(name)
    extra = {**base.extra, **({"training_data": training_data} if training_data else {})}
    spec = dataclasses.replace(base, arch_kwargs={**base.arch_kwargs, **arch},
                               synthetic=synthetic, extra=extra)
    folder.mkdir(exist_ok=True)
    return save_checkpoint(folder / name, ModelRegistry(bundled=False).build(spec), spec)


@pytest.fixture
def bundled(tmp_path):
    """A registry whose bundled folder holds a real-data LeNet and a synthetic U-Net."""
    folder = tmp_path / "weights"
    lenet = _save(folder, "nuclei-lenet", training_data="toy tiles (8 items)", input_size=32)
    unet = _save(folder, "mri-flair-unet", synthetic=True, depth=2, base_features=4)
    return ModelRegistry(bundled=folder), lenet, unet


TASKS = ("semantic_segmentation", "tile_classification")


def test_picker_runs_bundled_weights_and_shows_their_provenance(qtbot, bundled):
    registry, lenet, unet = bundled
    picker = ModelPicker(TASKS, registry=registry)
    picker.model.value = "nuclei-lenet"
    source = picker.source()
    assert source.checkpoint == lenet and not source.random_weights
    assert picker.warning == "" and not picker.random_weights
    assert picker.provenance.value == (
        "trained on real data (toy tiles (8 items), see docs/models.md)")
    assert picker.index(picker.provenance) == picker.index(picker.model) + 1  # under the combo

    picker.model.value = "mri-flair-unet"
    assert picker.source().checkpoint == unet
    assert picker.provenance.value == "trained on SYNTHETIC data - not clinically meaningful"
    assert "SYNTHETIC" in picker.warning and "random" not in picker.warning
    assert not picker.random_weights

    picker.model.value = "lgg-tissue"  # ships nothing
    source = picker.source()
    assert source.random_weights and source.model == "lgg-tissue"
    assert picker.provenance.value == "random weights (no trained model shipped)"
    assert "random weights" in picker.warning and picker.random_weights


def test_picker_checkpoint_file_provenance(qtbot, bundled, tmp_path):
    registry, _, unet = bundled
    picker = ModelPicker(TASKS, registry=registry)
    picker.model.value = FROM_FILE
    assert "choose a checkpoint file" in picker.provenance.value
    picker.file.value = unet
    assert picker.provenance.value.startswith("trained on SYNTHETIC data")
    assert picker.warning == "mri-flair-unet.safetensors: " + picker.provenance.value
    own = _save(tmp_path / "own", "nuclei-lenet", input_size=32)
    picker.file.value = own
    assert picker.provenance.value == (
        "trained weights from nuclei-lenet.safetensors (training data not recorded)")
    assert picker.warning == "" and picker.source().checkpoint == own


def test_default_picker_uses_the_shipped_weights_when_present(qtbot):
    registry = ModelRegistry()
    shipped = [n for n in ("nuclei-lenet", "nuclei-hovernet", "mri-flair-unet")
               if registry.checkpoint(n) is not None]
    if not shipped:
        pytest.skip("no weights ship in this checkout")
    picker = ModelPicker(("semantic_segmentation", "tile_classification",
                          "instance_segmentation"))
    for name in shipped:
        picker.model.value = name
        assert picker.source().checkpoint == registry.checkpoint(name)
        assert "random" not in picker.warning
        assert picker.provenance.value == registry.provenance(name)


def test_picker_starts_on_a_model_with_trained_weights(qtbot):
    """Issue 12: Analyse defaulted to gbm-tissue-8, which has random weights."""
    registry = ModelRegistry()
    names = ("gbm-tissue-8", "lgg-tissue", "nuclei-lenet")
    picker = ModelPicker(("semantic_segmentation", "tile_classification"), names=names)
    trained = [n for n in names if registry.checkpoint(n) is not None]
    if not trained:
        pytest.skip("no weights ship in this checkout")
    assert picker.model.value == trained[0] and not picker.random_weights


def test_picker_starts_on_the_first_preferred_model_that_ships_weights(qtbot, bundled):
    registry, _, _ = bundled  # trained: mri-flair-unet (first in menu order), nuclei-lenet
    assert ModelPicker(TASKS, registry=registry, preferred=()).model.value == "mri-flair-unet"
    picker = ModelPicker(TASKS, registry=registry, preferred=("lgg-tissue", "nuclei-lenet"))
    assert picker.model.value == "nuclei-lenet"  # lgg-tissue is preferred but ships nothing
    # the declared preference (mri-flair-transunet) ships nothing in this registry
    assert ModelPicker(TASKS, registry=registry).model.value == "mri-flair-unet"


def test_the_declared_preference_applies_only_to_the_pickers_that_offer_it(qtbot):
    """mri-flair-transunet cross-validated best: the MRI models start on it; other pickers
    keep the first model with trained weights."""
    registry = ModelRegistry()
    if any(registry.checkpoint(n) is None for n in ("mri-flair-transunet", "nuclei-lenet")):
        pytest.skip("the FLAIR TransUNet or the nuclei LeNet ships no weights in this checkout")
    assert PREFERRED_MODELS == ("mri-flair-transunet",)
    mri = ModelPicker(("semantic_segmentation",), names=("mri-flair-unet", "mri-flair-transunet"))
    assert mri.model.value == "mri-flair-transunet" and not mri.random_weights
    slide = ModelPicker(("semantic_segmentation", "tile_classification"),
                        names=("gbm-tissue-8", "lgg-tissue", "nuclei-lenet"))
    first_trained = next(n for n in ("gbm-tissue-8", "lgg-tissue", "nuclei-lenet")
                         if registry.checkpoint(n) is not None)
    assert slide.model.value == first_trained and not slide.random_weights
