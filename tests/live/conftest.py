"""A small synthetic slide, toy model specs and counting predictors for the live tests."""

import numpy as np
import pytest

from napari_neuroseg.models.spec import InputSpec, ModelSpec


def _toy_spec(task="semantic_segmentation", patch=64, halo=8, preprocessing=(), **extra):
    """A 2-class RGB model at 1 µm/px (working level 1 of a 0.5 µm/px slide)."""
    return ModelSpec(
        name=f"toy-{task}",
        task=task,
        architecture="unet",
        arch_kwargs={"in_channels": 3, "out_channels": 2, "depth": 2, "base_features": 4},
        input=InputSpec(("R", "G", "B"), {"kind": "range", "scale": 255.0}, (patch, patch),
                        halo=halo, resolution=1.0, preprocessing=preprocessing),
        classes=("background", "tissue"),
        colors=("#000000", "#ff00ff"),
        output="probabilities",
        extra=extra,
    )


class _Counting:
    """Dense predictor: 'tissue' = 1 - mean intensity (pointwise, so tiles stitch exactly)."""

    def __init__(self, dense=True):
        self.calls = 0
        self.tiles = 0
        self.dense = dense

    def __call__(self, batch):
        self.calls += 1
        self.tiles += len(batch)
        p = 1 - batch.mean(axis=1, keepdims=True) / 255.0
        out = np.concatenate([1 - p, p], axis=1).astype(np.float32)
        return out if self.dense else out.mean(axis=(2, 3))


@pytest.fixture(scope="session")
def slide(synthetic_slide):
    return synthetic_slide


@pytest.fixture(scope="session")
def toy_spec():
    """``toy_spec(task=..., patch=..., halo=..., preprocessing=..., **extra)`` -> ModelSpec."""
    return _toy_spec


@pytest.fixture(scope="session")
def Counting():
    """The counting predictor class (``Counting(dense=True)``)."""
    return _Counting
