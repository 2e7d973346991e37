"""Checkpoints: safetensors + JSON sidecar, verification, pickled conversion, atomic saves."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from napari_neuroseg.models import checkpoint as ckpt
from napari_neuroseg.models.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    convert_pickled_checkpoint,
    load_checkpoint,
    read_sidecar,
    save_checkpoint,
)
from napari_neuroseg.models.spec import ModelSpec


@pytest.fixture
def seg_spec(tiny_registry) -> ModelSpec:
    return tiny_registry.get("tiny-seg")


@pytest.fixture
def x() -> torch.Tensor:
    return torch.linspace(-2, 2, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _folder_listing(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_round_trip_gives_identical_outputs(tiny_registry, tiny_seg_model, seg_spec, x, tmp_path):
    weights = save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    assert weights == tmp_path / "seg.safetensors"
    assert _folder_listing(tmp_path) == ["seg.json", "seg.safetensors"]
    for form in ("seg", "seg.safetensors", "seg.json"):
        loaded = load_checkpoint(tmp_path / form, registry=tiny_registry)
        assert loaded.spec == seg_spec and loaded.path == weights
        assert not loaded.model.training
        assert torch.equal(_outputs(loaded.model, x), _outputs(tiny_seg_model, x))


def test_sidecar_fields(tiny_seg_model, seg_spec, tmp_path):
    history = {"loss": [3.0, 1.0, 2.0], "lr": 1e-3, "phase": "head"}
    save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec, history=history,
                    metrics={"dice": 0.75})  # fmt: skip
    side = read_sidecar(tmp_path / "seg")
    assert side["format"] == "napari-neuroseg-checkpoint" and side["format_version"] == 1
    assert ModelSpec.from_dict(side["spec"]) == seg_spec
    assert side["class_map"] == {"0": "background", "1": "a", "2": "b", "3": "c"}
    assert side["normalization"] == {"kind": "range", "scale": 255.0}
    assert side["threshold"] == 0.5 and side["synthetic"] is False
    assert side["history"] == {
        "loss": {"n": 3, "first": 3.0, "last": 2.0, "min": 1.0, "max": 3.0},
        "lr": 1e-3,
        "phase": "head",
    }
    assert side["metrics"] == {"dice": 0.75}
    assert dt.datetime.fromisoformat(side["created"]).tzinfo is not None
    assert side["software"]["torch"] == torch.__version__
    assert side["n_parameters"] == sum(p.numel() for p in tiny_seg_model.parameters())
    digest = hashlib.sha256((tmp_path / "seg.safetensors").read_bytes()).hexdigest()
    assert side["weights_sha256"] == digest


def test_save_leaves_the_model_unchanged(tiny_seg_model, seg_spec, tmp_path):
    before = {k: v.clone() for k, v in tiny_seg_model.state_dict().items()}
    tiny_seg_model.train()
    save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    assert tiny_seg_model.training
    after = tiny_seg_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tampered_weights_are_detected(tiny_registry, tiny_seg_model, seg_spec, tmp_path):
    weights = save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    state = load_file(str(weights))
    state["conv.weight"] = state["conv.weight"] + 1e-3
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"checkpoint does not match its sidecar"):
        load_checkpoint(weights, registry=tiny_registry)


def test_sidecar_of_another_model_is_refused(tiny_registry, tiny_seg_model, seg_spec, tmp_path):
    save_checkpoint(tmp_path / "four", tiny_seg_model, seg_spec)
    two = ModelSpec.from_dict(
        {**seg_spec.to_dict(), "name": "two", "arch_kwargs": {"n_classes": 2},
         "classes": ["bg", "fg"], "colors": ["#000000", "#ffffff"]}
    )  # fmt: skip
    save_checkpoint(tmp_path / "two", tiny_registry.build(two), two)
    foreign = json.loads((tmp_path / "two.json").read_text())
    (tmp_path / "four.json").write_text(json.dumps(foreign))
    with pytest.raises(CheckpointError, match=r"does not match its sidecar"):
        load_checkpoint(tmp_path / "four", registry=tiny_registry)
    # even with the hash forged, the shapes give it away, key by key
    foreign["weights_sha256"] = hashlib.sha256(
        (tmp_path / "four.safetensors").read_bytes()
    ).hexdigest()
    (tmp_path / "four.json").write_text(json.dumps(foreign))
    with pytest.raises(CheckpointError, match=r"'two'.*conv.weight \(4, 3, 1, 1\) vs \(2, 3"):
        load_checkpoint(tmp_path / "four", registry=tiny_registry)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format_version 2 was written by a newer napari-neuroseg"),
        ({"format_version": "1"}, "unknown format_version '1'"),
        ({"format_version": 0}, "unknown format_version 0"),
        ({"format": "something-else"}, "not a napari-neuroseg-checkpoint sidecar"),
    ],
)
def test_unknown_or_newer_formats_are_refused(tiny_seg_model, seg_spec, tmp_path, change, message):
    save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    side = json.loads((tmp_path / "seg.json").read_text())
    (tmp_path / "seg.json").write_text(json.dumps({**side, **change}))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "seg")


def test_broken_or_missing_files(tiny_seg_model, seg_spec, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sidecar not found"):
        read_sidecar(tmp_path / "absent")
    save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    (tmp_path / "seg.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"weights not found"):
        load_checkpoint(tmp_path / "seg")
    (tmp_path / "seg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"seg.json: not a JSON checkpoint sidecar"):
        read_sidecar(tmp_path / "seg.json")
    side = {"format": "napari-neuroseg-checkpoint", "format_version": 1, "spec": {"name": "x"}}
    (tmp_path / "seg.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"invalid model spec"):
        load_checkpoint(tmp_path / "seg")


def test_checkpoint_paths_accept_any_form(tmp_path):
    expected = (tmp_path / "m.v2.safetensors", tmp_path / "m.v2.json")
    for form in ("m.v2", "m.v2.safetensors", "m.v2.json"):
        assert checkpoint_paths(tmp_path / form) == expected


def test_pickled_state_dicts_are_converted(tiny_registry, tiny_seg_model, seg_spec, x, tmp_path):
    raw = tmp_path / "raw.pth"
    torch.save(tiny_seg_model.state_dict(), raw)
    convert_pickled_checkpoint(raw, seg_spec, tmp_path / "from_raw", registry=tiny_registry)
    wrapped = tmp_path / "training.pt"
    state = {f"module.{k}": v for k, v in tiny_seg_model.state_dict().items()}
    torch.save({"epoch": 49, "model_state_dict": state, "threshold": 0.1,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-5}]}},
               wrapped)  # fmt: skip
    convert_pickled_checkpoint(wrapped, seg_spec, tmp_path / "from_dp", registry=tiny_registry)
    expected = _outputs(tiny_seg_model, x)
    for name in ("from_raw", "from_dp"):
        loaded = load_checkpoint(tmp_path / name, registry=tiny_registry)
        assert torch.equal(_outputs(loaded.model, x), expected)


def test_conversion_lists_keys_that_do_not_fit(tiny_registry, tiny_seg_model, seg_spec, tmp_path):
    state = dict(tiny_seg_model.state_dict())
    state["head.weight"] = state.pop("conv.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"missing: conv.weight; unexpected: head.weight"):
        convert_pickled_checkpoint(tmp_path / "renamed.pth", seg_spec, tmp_path / "out",
                                   registry=tiny_registry)  # fmt: skip
    assert not (tmp_path / "out.safetensors").exists()


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_files_needing_arbitrary_unpickling_are_refused(tiny_seg_model, seg_spec, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_seg_model.state_dict(),
                "payload": _RunsCodeWhenUnpickled(str(marker))}, evil)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"evil.pth: refused.*mkdir.*state_dict\(\)"):
        convert_pickled_checkpoint(evil, seg_spec, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out.json").exists()


def test_non_torch_files_and_non_state_dicts(seg_spec, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"this is not a pickle")
    with pytest.raises(CheckpointError, match=r"junk.pth: not a PyTorch checkpoint"):
        convert_pickled_checkpoint(tmp_path / "junk.pth", seg_spec, tmp_path / "out")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"not a state dict.*weights"):
        convert_pickled_checkpoint(tmp_path / "list.pth", seg_spec, tmp_path / "out")


def test_failed_first_save_leaves_nothing(monkeypatch, tiny_seg_model, seg_spec, tmp_path):
    with pytest.raises(CheckpointError, match=r"seg.json: history/metrics not JSON-serialisable"):
        save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec, metrics={"bad": object()})
    assert _folder_listing(tmp_path) == []

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_sidecar", fail)
    with pytest.raises(OSError, match=r"disk full"):
        save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    assert _folder_listing(tmp_path) == []


@pytest.mark.parametrize("failing_step", ["sidecar", "rename_sidecar", "rename_weights"])
def test_failed_save_keeps_the_previous_checkpoint(
    monkeypatch, tiny_registry, tiny_seg_model, seg_spec, x, tmp_path, failing_step
):
    save_checkpoint(tmp_path / "seg", tiny_seg_model, seg_spec)
    expected = _outputs(tiny_seg_model, x)
    newer = tiny_registry.build("tiny-seg")
    real_replace = os.replace

    def replace(src, dst):
        target = {"rename_sidecar": "seg.json", "rename_weights": "seg.safetensors"}
        if os.fspath(src).endswith(".tmp") and os.fspath(dst).endswith(target[failing_step]):
            raise OSError("rename failed")
        return real_replace(src, dst)

    def fail(*args, **kwargs):
        raise OSError("rename failed")

    if failing_step == "sidecar":
        monkeypatch.setattr(ckpt.json, "dumps", fail)
    else:
        monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(OSError, match=r"rename failed"):
        save_checkpoint(tmp_path / "seg", newer, seg_spec)
    monkeypatch.undo()
    assert _folder_listing(tmp_path) == ["seg.json", "seg.safetensors"]
    loaded = load_checkpoint(tmp_path / "seg", registry=tiny_registry)
    assert torch.equal(_outputs(loaded.model, x), expected)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_tied_weights_are_saved_and_restored(tiny_registry, seg_spec, tmp_path):
    tiny_registry.register_architecture("tied", _Tied)
    spec = ModelSpec.from_dict({**seg_spec.to_dict(), "architecture": "tied", "arch_kwargs": {}})
    model = tiny_registry.build(spec)
    save_checkpoint(tmp_path / "tied", model, spec)
    loaded = load_checkpoint(tmp_path / "tied", registry=tiny_registry).model
    inp = torch.ones(1, 4)
    assert torch.equal(_outputs(loaded, inp), _outputs(model, inp))
