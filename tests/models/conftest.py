"""Tiny architectures and specs for registry, checkpoint and runner tests (fast on a CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import InputSpec, ModelSpec


class TinySegNet(nn.Module):
    """1x1 convolution + batch norm: per-pixel logits, with buffers in the state dict."""

    def __init__(self, in_channels: int = 3, n_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_classes, 1)
        self.norm = nn.BatchNorm2d(n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class TinyClassifier(nn.Module):
    """Global average pool + linear: (N, n_outputs) logits."""

    def __init__(self, in_channels: int = 3, n_outputs: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class TinyHoVer(nn.Module):
    """HoVer-Net output contract: {"np": 2, "hv": 2, optional "tp": n_types} channels."""

    def __init__(self, in_channels: int = 3, n_types: int | None = None) -> None:
        super().__init__()
        self.np_head = nn.Conv2d(in_channels, 2, 1)
        self.hv_head = nn.Conv2d(in_channels, 2, 1)
        self.tp_head = None if n_types is None else nn.Conv2d(in_channels, n_types, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"np": self.np_head(x), "hv": torch.tanh(self.hv_head(x))}
        if self.tp_head is not None:
            out["tp"] = self.tp_head(x)
        return out


class TinyGenerator(nn.Module):
    """1x1 convolution + tanh: an image in [-1, 1]."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


TINY_ARCHITECTURES = {
    "tiny_seg": TinySegNet,
    "tiny_classifier": TinyClassifier,
    "tiny_hover": TinyHoVer,
    "tiny_generator": TinyGenerator,
    "conv1x1": "torch.nn:Conv2d",
}

RGB = ("R", "G", "B")
UNIT = {"kind": "range", "scale": 255.0}


def _spec(name: str, task: str, arch: str, kwargs: dict, classes, output, **kw) -> ModelSpec:
    inp = kw.pop("input", None) or InputSpec(RGB, dict(UNIT), (32, 32), halo=4)
    colors = tuple(f"#{i:02x}{i:02x}{i:02x}" for i in range(len(classes)))
    return ModelSpec(name, task, arch, kwargs, inp, tuple(classes), colors, output, **kw)


def tiny_specs() -> list[ModelSpec]:
    """One spec per task, on the tiny architectures."""
    ct_input = InputSpec(("HU",), {"kind": "ct_window", "center": 40, "width": 80}, (32, 32))
    return [
        _spec("tiny-seg", "semantic_segmentation", "tiny_seg", {"n_classes": 4},
              ("background", "a", "b", "c"), "probabilities"),
        _spec("tiny-binary", "semantic_segmentation", "conv1x1",
              {"in_channels": 3, "out_channels": 1, "kernel_size": 1},
              ("background", "lesion"), "logit"),
        _spec("tiny-tiles", "tile_classification", "tiny_classifier", {"n_outputs": 2},
              ("NO", "YES"), "probabilities"),
        _spec("tiny-slice", "slice_classification", "tiny_classifier",
              {"in_channels": 1, "n_outputs": 1}, ("neg", "pos"), "logit",
              input=ct_input, threshold=0.1),
        _spec("tiny-hover", "instance_segmentation", "tiny_hover", {},
              ("background", "nucleus"), "instances"),
        _spec("tiny-hover-types", "instance_segmentation", "tiny_hover", {"n_types": 3},
              ("background", "nucleus"), "instances",
              extra={"type_classes": ["background", "tumour", "immune"]}),
        _spec("tiny-translate", "image_translation", "tiny_generator", {}, RGB, "image",
              input=InputSpec(RGB, {"kind": "range", "scale": 255.0, "out_range": [-1, 1]},
                              (32, 32))),
    ]  # fmt: skip


@pytest.fixture
def tiny_registry() -> ModelRegistry:
    """A registry holding only the tiny models (no default specs)."""
    return ModelRegistry(tiny_specs(), architectures=TINY_ARCHITECTURES)


@pytest.fixture
def tiny_seg_model(tiny_registry: ModelRegistry) -> nn.Module:
    """A ``tiny-seg`` network with seeded, non-trivial weights and batch-norm statistics."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        model = tiny_registry.build("tiny-seg")
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    return model.eval()
