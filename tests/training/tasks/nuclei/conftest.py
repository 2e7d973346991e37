"""Shared fixtures of the training-task tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import ellipse

from napari_neuroseg.dataset import DatasetWriter
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from training.tasks._common import build_spec


def synthetic_nuclei_tile(seed: int, size: int, attempts: int, radii: tuple[int, int]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """A pink tile with dark purple, non-overlapping ellipses and their instance labels."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (235, 190, 215)
    labels = np.zeros((size, size), np.uint16)
    margin = radii[1] - 1
    for _ in range(attempts):
        r, c = rng.integers(margin, size - margin, 2)
        rows, cols = ellipse(r, c, rng.integers(*radii), rng.integers(*radii),
                             shape=labels.shape, rotation=rng.uniform(0, np.pi))
        if not labels[rows, cols].any():
            labels[rows, cols] = labels.max() + 1
            image[rows, cols] = (90, 50, 130)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def make_nuclei_dataset(tmp_path_factory):
    """``make(size, attempts, radii)``: six synthetic nuclei tiles of three patients (two
    each) in a ``nuclei`` dataset; returns its folder."""

    def make(size: int, attempts: int, radii: tuple[int, int]) -> Path:
        root = tmp_path_factory.mktemp("nuclei-ds") / "ds"
        with DatasetWriter(root, "nuclei", "HE", {0: "background", 1: "nucleus"}) as writer:
            for i in range(6):
                image, labels = synthetic_nuclei_tile(10 + i, size, attempts, radii)
                writer.add(image, labels, patient_id=f"TCGA-XX-000{i // 2}", slide_id=f"s{i}")
        return root

    return make


@pytest.fixture(scope="module")
def make_tiny_hovernet(tmp_path_factory):
    """``make(postprocess=None)``: an untrained, tiny nuclei-hovernet checkpoint (seed 0); the
    spec keeps the task's default post-processing unless ``postprocess`` replaces it."""
    import torch

    def make(postprocess: dict | None = None) -> Path:
        spec = build_spec("nuclei-hovernet", {"base_features": 4, "encoder_depth": 2,
                                              "blocks_per_level": 1})
        if postprocess is not None:
            spec = replace(spec, extra={**spec.extra, "postprocess": postprocess})
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
        save_checkpoint(path, ModelRegistry().build(spec), spec)
        return path

    return make
