"""Model registry: declared specs, architectures by import string, checkpoints, errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from torch import nn

from napari_neuroseg.models import registry as registry_module
from napari_neuroseg.models._default_specs import LEGACY_NO_WEIGHTS
from napari_neuroseg.models.checkpoint import CheckpointError, save_checkpoint
from napari_neuroseg.models.registry import (
    ARCHITECTURES,
    DEFAULT_SPECS,
    ModelRegistry,
    RegistryError,
    default_specs,
)
from napari_neuroseg.models.spec import ModelSpec, SpecError

from .conftest import TINY_ARCHITECTURES, tiny_specs

#: Architecture key -> class name; each lives in ``napari_neuroseg.models.<module>``.
EXPECTED_ARCHITECTURES = {"unet": "UNet", "transunet": "TransUNet", "tissue": "TissueSegmenter",
                          "cyclegan_generator": "ResnetGenerator", "patchgan": "PatchDiscriminator",
                          "resnet50_slice": "ResNet50Slice", "lenet5": "LeNet5",
                          "hovernet": "HoVerNet"}
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
    assert list(ARCHITECTURES) == list(EXPECTED_ARCHITECTURES)
    for key, target in ARCHITECTURES.items():
        module, _, name = target.partition(":")
        assert module.startswith("napari_neuroseg.models.")
        assert name == EXPECTED_ARCHITECTURES[key]
    with pytest.raises(TypeError):
        ARCHITECTURES["unet"] = "x:Y"  # type: ignore[index]


def test_default_specs_declare_one_model_per_seed_and_are_read_only():
    assert list(DEFAULT_SPECS) == DECLARED
    with pytest.raises(TypeError):
        DEFAULT_SPECS["x"] = DEFAULT_SPECS["lgg-tissue"]  # type: ignore[index]
    for name, spec in DEFAULT_SPECS.items():
        assert spec.name == name
        assert spec.architecture in ARCHITECTURES
        assert "No trained weights" not in spec.description  # provenance is said apart
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
    assert gbm.input.preprocessing == ("tissue_mask",)  # GBM_WSSM was trained without Macenko
    assert (lgg.input.patch_size, lgg.input.halo, lgg.input.resolution) == ((256, 256), 32, 5.0)
    assert gbm.input.resolution == lgg.input.resolution
    for spec in (gbm, lgg):  # the GBM_WSSM FC-DenseNet103
        assert list(spec.arch_kwargs["down_blocks"]) == [4, 5, 7, 10, 12]
        assert spec.arch_kwargs["bottleneck_layers"] == 15
        assert (spec.arch_kwargs["first_filters"], spec.arch_kwargs["growth_rate"]) == (48, 16)
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
    first, second = ModelRegistry(bundled=False), ModelRegistry(bundled=False)
    first.get("lgg-tissue").arch_kwargs["growth_rate"] = 999  # a copy: no effect
    assert first.get("lgg-tissue").arch_kwargs["growth_rate"] == 16
    first.register(ModelSpec.from_dict({**DEFAULT_SPECS["lgg-tissue"].to_dict(), "name": "mine"}))
    assert "mine" in first and "mine" not in second
    assert DEFAULT_SPECS["lgg-tissue"].arch_kwargs["growth_rate"] == 16
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
        "name", "task", "architecture", "classes", "synthetic", "checkpoint", "bundled",
        "provenance", "description",
    }  # fmt: skip
    assert rows["tiny-seg"]["provenance"] == "random weights (no trained model shipped)"

    spec = ModelSpec.from_dict({**tiny_registry.get("tiny-seg").to_dict(), "synthetic": True})
    weights = save_checkpoint(tmp_path / "seg", tiny_seg_model, spec)
    assert tiny_registry.register_checkpoint(tmp_path / "seg.json") == spec
    rows = {row["name"]: row for row in tiny_registry.list_models()}
    assert rows["tiny-seg"]["checkpoint"] == str(weights)
    assert rows["tiny-seg"]["synthetic"] is True and rows["tiny-seg"]["bundled"] is False
    assert rows["tiny-seg"]["provenance"].startswith("trained on SYNTHETIC data")
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


# --- checkpoints that ship with the package ----------------------------------------------


def _bundle(folder, model, spec, **extra):
    """Save ``model`` as the bundled checkpoint ``folder/<spec.name>.*``."""
    spec = dataclasses.replace(spec, extra={**spec.extra, **extra})
    folder.mkdir(exist_ok=True)
    return save_checkpoint(folder / spec.name, model, spec)


def _tiny_with(folder, **kw):
    return ModelRegistry(tiny_specs(), architectures=TINY_ARCHITECTURES, bundled=folder, **kw)


def test_bundled_checkpoints_are_registered_with_their_provenance(
    tiny_registry, tiny_seg_model, tmp_path
):
    folder = tmp_path / "weights"
    declared = tiny_registry.get("tiny-seg")
    spec = dataclasses.replace(declared, description="Trained." + LEGACY_NO_WEIGHTS)
    weights = _bundle(folder, tiny_seg_model, spec, training_data="toy tiles (4 items)")
    registry = _tiny_with(folder)
    assert registry.checkpoint("tiny-seg") == weights and registry.is_bundled("tiny-seg")
    assert registry.get("tiny-seg").description == "Trained."  # the stale sentence is gone
    assert registry.provenance("tiny-seg") == (
        "trained on real data (toy tiles (4 items), see docs/models.md)"
    )
    row = next(r for r in registry.list_models() if r["name"] == "tiny-seg")
    assert row["checkpoint"] == str(weights) and row["bundled"] is True
    assert registry.provenance("tiny-binary") == "random weights (no trained model shipped)"
    # a checkpoint of one's own replaces the bundled one and is no longer "bundled"
    own = save_checkpoint(tmp_path / "own", tiny_seg_model, declared)
    registry.register_checkpoint(own)
    assert not registry.is_bundled("tiny-seg")
    assert registry.provenance("tiny-seg") == (
        "trained weights from own.safetensors (training data not recorded)"
    )


def test_bundled_synthetic_checkpoint_says_so(tiny_registry, tiny_seg_model, tmp_path):
    spec = dataclasses.replace(tiny_registry.get("tiny-seg"), synthetic=True)
    _bundle(tmp_path, tiny_seg_model, spec)
    assert _tiny_with(tmp_path).provenance("tiny-seg") == (
        "trained on SYNTHETIC data - not clinically meaningful"
    )


def _corrupt(kind, folder, model, spec):
    weights = _bundle(folder, model, spec)
    sidecar = weights.with_suffix(".json")
    if kind == "garbage json":
        sidecar.write_text("{not json")
    elif kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-7])
    elif kind == "missing weights":
        weights.unlink()
    elif kind == "renamed":
        sidecar.rename(folder / "other-name.json")
        weights.rename(folder / "other-name.safetensors")
        return folder / "other-name.json"
    elif kind == "unknown architecture":
        data = json.loads(sidecar.read_text())
        data["spec"]["architecture"] = "no_such_arch"
        sidecar.write_text(json.dumps(data))
    elif kind == "bad arch_kwargs":
        data = json.loads(sidecar.read_text())
        data["spec"]["arch_kwargs"]["width"] = 3
        sidecar.write_text(json.dumps(data))
    return sidecar


@pytest.mark.parametrize(
    "kind",
    ["garbage json", "truncated weights", "missing weights", "renamed", "unknown architecture",
     "bad arch_kwargs"],
)  # fmt: skip
def test_broken_bundled_file_warns_and_keeps_the_declared_spec(
    kind, tiny_registry, tiny_seg_model, tmp_path
):
    declared = tiny_registry.get("tiny-seg")
    spec = dataclasses.replace(declared, arch_kwargs={"n_classes": 4, "in_channels": 3})
    good = _bundle(tmp_path, tiny_registry.build("tiny-tiles"), tiny_registry.get("tiny-tiles"))
    bad = _corrupt(kind, tmp_path, tiny_seg_model, spec)
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        registry = _tiny_with(tmp_path)
    assert registry.get("tiny-seg") == declared and registry.checkpoint("tiny-seg") is None
    assert registry.provenance("tiny-seg").startswith("random weights")
    assert registry.checkpoint("tiny-tiles") == good  # the other bundled file still counts
    assert "other-name" not in registry


def test_which_registries_take_the_bundled_folder(tmp_path, monkeypatch):
    lenet = dataclasses.replace(
        DEFAULT_SPECS["nuclei-lenet"],
        arch_kwargs={**DEFAULT_SPECS["nuclei-lenet"].arch_kwargs, "input_size": 32},
    )
    weights = _bundle(tmp_path, ModelRegistry(bundled=False).build(lenet), lenet)
    monkeypatch.setattr(registry_module, "bundled_weights_folder", lambda: tmp_path)
    assert ModelRegistry().checkpoint("nuclei-lenet") == weights
    assert ModelRegistry().get("nuclei-lenet").arch_kwargs["input_size"] == 32
    assert ModelRegistry(bundled=False).checkpoint("nuclei-lenet") is None
    assert ModelRegistry(bundled=False).get("nuclei-lenet") == DEFAULT_SPECS["nuclei-lenet"]
    own = ModelRegistry(tiny_specs(), architectures=TINY_ARCHITECTURES)
    assert "nuclei-lenet" not in own  # one's own specs stay as given
    mixed = ModelRegistry(tiny_specs(), architectures=TINY_ARCHITECTURES, bundled=True)
    assert mixed.checkpoint("nuclei-lenet") == weights


def test_missing_bundled_folder_is_no_error(tmp_path):
    assert ModelRegistry(bundled=tmp_path / "absent").checkpoint("nuclei-lenet") is None


SHIPPED = ("nuclei-hovernet", "mri-flair-unet", "nuclei-lenet", "ihc-to-he")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_small_named_right_and_load(name):
    from napari_neuroseg.models.bundled import bundled_weights_folder
    from napari_neuroseg.models.checkpoint import load_checkpoint

    weights = bundled_weights_folder() / f"{name}.safetensors"
    if not weights.is_file():
        pytest.skip(f"{name} ships no weights in this checkout")
    assert weights.stat().st_size < 8 * 2**20, f"{weights} is over 8 MB"
    registry = ModelRegistry()
    assert registry.checkpoint(name) == weights and registry.is_bundled(name)
    loaded = load_checkpoint(weights, registry=registry)
    assert loaded.spec.name == name and not loaded.model.training
    assert registry.provenance(name) != "random weights (no trained model shipped)"
    assert "No trained weights" not in registry.get(name).description
