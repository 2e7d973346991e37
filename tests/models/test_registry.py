"""Model registry: declared specs, architectures by import string, checkpoints, errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from napari_neuroseg.models.checkpoint import CheckpointError, save_checkpoint
from napari_neuroseg.models.registry import (
    ARCHITECTURES,
    DEFAULT_SPECS,
    ModelRegistry,
    RegistryError,
    default_specs,
)
from napari_neuroseg.models.spec import ModelSpec, SpecError

EXPECTED_ARCHITECTURES = {
    "unet": "napari_neuroseg.models.unet:UNet",
    "transunet": "napari_neuroseg.models.transunet:TransUNet",
    "tissue": "napari_neuroseg.models.tissue:TissueSegmenter",
    "cyclegan_generator": "napari_neuroseg.models.cyclegan:ResnetGenerator",
    "patchgan": "napari_neuroseg.models.cyclegan:PatchDiscriminator",
    "resnet50_slice": "napari_neuroseg.models.resnet:ResNet50Slice",
    "lenet5": "napari_neuroseg.models.lenet:LeNet5",
    "hovernet": "napari_neuroseg.models.hovernet:HoVerNet",
}
DECLARED = [
    "gbm-tissue-8",
    "lgg-tissue",
    "mri-flair-unet",
    "mri-flair-transunet",
    "ct-metastasis",
    "nuclei-lenet",
    "nuclei-hovernet",
    "ihc-to-he",
]


def test_architectures_are_the_agreed_import_strings_and_read_only():
    assert dict(ARCHITECTURES) == EXPECTED_ARCHITECTURES
    with pytest.raises(TypeError):
        ARCHITECTURES["unet"] = "x:Y"  # type: ignore[index]


def test_default_specs_declare_one_model_per_seed_and_are_read_only():
    assert list(DEFAULT_SPECS) == DECLARED
    with pytest.raises(TypeError):
        DEFAULT_SPECS["x"] = DEFAULT_SPECS["lgg-tissue"]  # type: ignore[index]
    for name, spec in DEFAULT_SPECS.items():
        assert spec.name == name
        assert spec.architecture in ARCHITECTURES
        assert "No trained weights" in spec.description
        assert all(c.startswith("#") and len(c) == 7 for c in spec.colors)
        assert len(set(spec.colors)) == len(spec.colors), f"{name}: colours repeat"


@pytest.mark.parametrize("name", DECLARED)
def test_default_specs_survive_a_json_round_trip(name):
    spec = DEFAULT_SPECS[name]
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_default_spec_values_follow_the_seeds():
    gbm, lgg = DEFAULT_SPECS["gbm-tissue-8"], DEFAULT_SPECS["lgg-tissue"]
    assert gbm.n_classes == 8 and gbm.arch_kwargs["mapping_head"] is False
    assert gbm.classes[0] == "background" and "necrosis" in gbm.classes
    assert lgg.classes == ("background", "cellular tumour", "leading edge", "infiltrating tumour")
    assert lgg.arch_kwargs["mapping_head"] is True and lgg.arch_kwargs["n_target_classes"] == 4
    assert lgg.input.preprocessing == ("macenko", "tissue_mask")
    assert (lgg.input.patch_size, lgg.input.halo, lgg.input.resolution) == ((256, 256), 32, 1.0)
    # shared region classes have the same colour in both tissue models
    for cls, color in zip(lgg.classes, lgg.colors, strict=True):
        assert gbm.colors[gbm.classes.index(cls)] == color

    unet = DEFAULT_SPECS["mri-flair-unet"]
    assert unet.arch_kwargs["depth"] == 5 and unet.arch_kwargs["base_features"] == 32
    assert unet.arch_kwargs["out_channels"] == 1 and unet.output == "logit"
    assert unet.input.channels == ("pre-contrast", "FLAIR", "post-contrast")
    assert unet.input.normalization["kind"] == "zscore" and unet.input.halo == 0

    ct = DEFAULT_SPECS["ct-metastasis"]
    assert ct.threshold == pytest.approx(0.10) and ct.input.channels == ("HU",)
    assert ct.input.normalization == {"kind": "ct_window", "center": 40.0, "width": 80.0}
    assert ct.input.preprocessing == ("brain_extraction", "ct_window")

    lenet = DEFAULT_SPECS["nuclei-lenet"]
    assert lenet.classes == ("NO_NUCLEUS", "NUCLEI") and lenet.extra["stride"] == 128
    hover = DEFAULT_SPECS["nuclei-hovernet"]
    assert (hover.input.halo, hover.input.resolution) == (32, 0.5)
    gan = DEFAULT_SPECS["ihc-to-he"]
    assert gan.input.normalization["out_range"] == [-1.0, 1.0]


def test_each_registry_owns_fresh_copies():
    first, second = ModelRegistry(), ModelRegistry()
    first.get("lgg-tissue").arch_kwargs["base_features"] = 999  # a copy: no effect
    assert first.get("lgg-tissue").arch_kwargs["base_features"] == 32
    first.register(ModelSpec.from_dict({**DEFAULT_SPECS["lgg-tissue"].to_dict(), "name": "mine"}))
    assert "mine" in first and "mine" not in second
    assert DEFAULT_SPECS["lgg-tissue"].arch_kwargs["base_features"] == 32
    assert default_specs()[1] == DEFAULT_SPECS["lgg-tissue"]
    assert default_specs()[1].arch_kwargs is not DEFAULT_SPECS["lgg-tissue"].arch_kwargs


def test_unknown_model_lists_the_known_ones(tiny_registry):
    with pytest.raises(RegistryError, match=r"unknown model 'nope'.*tiny-seg"):
        tiny_registry.get("nope")
    with pytest.raises(RegistryError, match=r"unknown model"):
        tiny_registry.build("nope")


def test_register_refuses_duplicates_and_unknown_architectures(tiny_registry):
    spec = tiny_registry.get("tiny-seg")
    with pytest.raises(RegistryError, match=r"already registered; pass replace=True"):
        tiny_registry.register(spec)
    tiny_registry.register(spec, replace=True)
    bad = ModelSpec.from_dict({**spec.to_dict(), "name": "x", "architecture": "resnet1000"})
    with pytest.raises(RegistryError, match=r"model 'x': unknown architecture 'resnet1000'.*unet"):
        tiny_registry.register(bad)


def test_architecture_by_import_string_is_built_with_arch_kwargs(tiny_registry):
    model = tiny_registry.build("tiny-binary")
    assert isinstance(model, nn.Conv2d)
    assert (model.in_channels, model.out_channels, model.kernel_size) == (3, 1, (1, 1))


def test_arch_kwargs_the_class_rejects_give_a_clear_error(tiny_registry):
    spec = tiny_registry.get("tiny-seg")
    bad = ModelSpec.from_dict({**spec.to_dict(), "arch_kwargs": {"n_clases": 4}})
    with pytest.raises(
        SpecError,
        match=r"'tiny-seg'.*rejects arch_kwargs.*n_clases.*accepts: "
        r"in_channels, n_classes",
    ):
        tiny_registry.build(bad)


def test_bad_architecture_targets(tiny_registry):
    with pytest.raises(RegistryError, match=r"not of the form"):
        tiny_registry.register_architecture("a", "no_colon_here")
    with pytest.raises(RegistryError, match=r"already registered"):
        tiny_registry.register_architecture("tiny_seg", "torch.nn:Conv2d")
    tiny_registry.register_architecture("ghost", "napari_neuroseg.models.no_such_module:Net")
    with pytest.raises(RegistryError, match=r"'ghost'.*cannot be imported"):
        tiny_registry.resolve_architecture("ghost")
    tiny_registry.register_architecture("typo", "torch.nn:Conv2dd")
    with pytest.raises(RegistryError, match=r"has no 'Conv2dd'"):
        tiny_registry.resolve_architecture("typo")
    tiny_registry.register_architecture("not_module", "collections:OrderedDict")
    with pytest.raises(RegistryError, match=r"not a torch.nn.Module"):
        tiny_registry.resolve_architecture("not_module")


def test_list_models_reports_checkpoints(tiny_registry, tiny_seg_model, tmp_path):
    rows = {row["name"]: row for row in tiny_registry.list_models()}
    assert rows["tiny-seg"]["checkpoint"] is None
    assert rows["tiny-seg"]["classes"] == ["background", "a", "b", "c"]
    assert set(rows["tiny-seg"]) == {
        "name", "task", "architecture", "classes", "synthetic", "checkpoint", "description"
    }  # fmt: skip

    spec = ModelSpec.from_dict({**tiny_registry.get("tiny-seg").to_dict(), "synthetic": True})
    weights = save_checkpoint(tmp_path / "seg", tiny_seg_model, spec)
    assert tiny_registry.register_checkpoint(tmp_path / "seg.json") == spec
    rows = {row["name"]: row for row in tiny_registry.list_models()}
    assert rows["tiny-seg"]["checkpoint"] == str(weights)
    assert rows["tiny-seg"]["synthetic"] is True
    assert tiny_registry.checkpoint("tiny-seg") == weights


def test_register_checkpoints_scans_a_folder(tiny_registry, tiny_seg_model, tmp_path):
    spec = ModelSpec.from_dict({**tiny_registry.get("tiny-seg").to_dict(), "name": "found"})
    save_checkpoint(tmp_path / "found.safetensors", tiny_seg_model, spec)
    (tmp_path / "other.json").write_text('{"not": "a checkpoint"}')
    (tmp_path / "other.safetensors").write_bytes(b"")
    (tmp_path / "lonely.json").write_text("{}")
    assert tiny_registry.register_checkpoints(tmp_path) == ["found"]
    assert tiny_registry.checkpoint("found") == tmp_path / "found.safetensors"
    built = tiny_registry.build("found")
    assert isinstance(built, nn.Module) and not isinstance(built, nn.Conv2d)


def test_registry_build_gives_random_weights_on_cpu(tiny_registry):
    model = tiny_registry.build("tiny-seg")
    assert model.training and next(model.parameters()).device == torch.device("cpu")


def test_register_checkpoint_with_a_broken_spec_names_the_file(tiny_registry, tmp_path):
    side = {"format": "napari-neuroseg-checkpoint", "format_version": 1, "spec": {"name": "x"}}
    (tmp_path / "broken.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"broken.json: invalid model spec"):
        tiny_registry.register_checkpoint(tmp_path / "broken.safetensors")
    assert "x" not in tiny_registry
