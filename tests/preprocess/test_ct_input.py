"""One CT preprocessing path, chosen by the steps a checkpoint's sidecar records."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from skimage.transform import resize

from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.preprocess.ct import brain_mask, extract_brain, preprocess_ct_slice
from napari_neuroseg.preprocess.ct_input import (
    CT_LEGACY_STEPS,
    CT_RECIPE_NORMALIZATION,
    CT_RECIPE_STEPS,
    ct_model_input,
    ct_window_of,
    is_recipe_input,
)
from napari_neuroseg.samples.ct import HeadPhantom

SPACING = 0.7
SIZE = 96


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    phantom = HeadPhantom.fitting(SIZE * SPACING, 90.0)
    centres = (np.arange(SIZE) - (SIZE - 1) / 2) * SPACING
    y, x = np.meshgrid(centres, centres, indexing="ij")
    slab = phantom.hu(np.stack([x, y, np.zeros_like(x)], axis=-1)).astype(np.float32)
    return np.pad(slab, ((0, 0), (16, 16)), constant_values=-1024.0)  # 96 x 128, not square


def _spec(steps, size=(64, 64), **extra):
    base = ModelRegistry(bundled=False).get("ct-metastasis")
    norm = dict(CT_RECIPE_NORMALIZATION) if "zscore" in steps else base.input.normalization
    return replace(base, input=replace(base.input, preprocessing=steps, patch_size=size,
                                       normalization=norm),
                   extra={**base.extra, **extra})


def test_the_bundled_spec_and_old_sidecars_read_as_the_earlier_path():
    spec = ModelRegistry(bundled=False).get("ct-metastasis")
    assert tuple(spec.input.preprocessing) == CT_LEGACY_STEPS and not is_recipe_input(spec)
    assert ct_window_of(spec) == (40.0, 80.0)


def test_recipe_steps_are_window_zscore_pad_resize(hu):
    spec = _spec(CT_RECIPE_STEPS, ct_window={"center": 40, "width": 80})
    assert is_recipe_input(spec) and ct_window_of(spec) == (40.0, 80.0)
    out = ct_model_input(hu, spec, SPACING)
    expected = preprocess_ct_slice(hu, 64, spacing=SPACING, center=40.0, width=80.0)
    np.testing.assert_array_equal(out, expected)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert np.allclose(out[:6], out[0, 0])  # the padded rows hold the background z-score
    mask = brain_mask(hu, spacing=SPACING)
    np.testing.assert_array_equal(ct_model_input(hu, spec, SPACING, mask=mask), out)
    other = _spec(CT_RECIPE_STEPS, ct_window={"center": 60, "width": 160})
    assert not np.allclose(ct_model_input(hu, other, SPACING), out)


def test_legacy_steps_keep_the_earlier_brain_hu_resized_without_padding(hu):
    spec = _spec(CT_LEGACY_STEPS)
    out = ct_model_input(hu, spec, SPACING)
    earlier = resize(extract_brain(hu, spacing=SPACING), (64, 64), order=1,
                     preserve_range=True, anti_aliasing=True).astype(np.float32)
    np.testing.assert_array_equal(out, earlier)  # what prepare_ct_slice returned before
    plain = ct_model_input(hu, _spec(("ct_window",), size=hu.shape), SPACING)
    np.testing.assert_array_equal(plain, hu)  # no brain extraction, no resize
