"""CT windowing, brain extraction and the CT metastasis recipe's model input (phantom, real CT)."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io.dicom import read_dicom
from napari_neuroseg.preprocess.ct import (
    AIR_HU,
    WINDOW_PRESETS,
    brain_mask,
    brain_mask_volume,
    extract_brain,
    preprocess_ct_slice,
    slice_quality,
    window,
)
from napari_neuroseg.samples.ct import HeadPhantom, write_ct_series

SPACING = 0.7  # mm per pixel
SIZE = 128
BRAIN = 0.88  # the phantom's brain is the ellipsoid scaled by this (inside the skull)


@pytest.fixture(scope="module")
def phantom() -> HeadPhantom:
    return HeadPhantom.fitting(SIZE * SPACING, 115.0)


def phantom_slice(phantom: HeadPhantom, z_mm: float, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An axial slice at height ``z_mm`` (HU with 3 HU noise) and its radius map rho."""
    centres = (np.arange(SIZE) - (SIZE - 1) / 2) * SPACING
    y, x = np.meshgrid(centres, centres, indexing="ij")
    points = np.stack([x, y, np.full_like(x, z_mm)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 3, x.shape)
    rho = np.sqrt(np.sum((points / np.array(phantom.semi_axes)) ** 2, axis=-1))
    return phantom.hu(points) + noise.astype(np.float32), rho


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (a.sum() + b.sum())


def test_window_values():
    hu = np.array([-1000, 0, 20, 40, 60, 80, 3000], dtype=np.int16)
    np.testing.assert_allclose(window(hu), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert window(hu).dtype == np.float32
    bone = window(hu, *WINDOW_PRESETS["bone"])  # -800 .. 2000 HU
    np.testing.assert_allclose(bone, (np.clip(hu, -800, 2000) + 800) / 2800, rtol=1e-6)
    with pytest.raises(ValueError, match="width"):
        window(hu, 40, 0)


def test_window_presets_are_read_only():
    assert WINDOW_PRESETS["brain"] == (40.0, 80.0)
    assert WINDOW_PRESETS["subdural"] == (75.0, 215.0)
    with pytest.raises(TypeError):
        WINDOW_PRESETS["brain"] = (0.0, 1.0)


def test_window_stays_lazy_on_dask():
    volume = da.full((4, 8, 8), 40, dtype=np.int16, chunks=(1, 8, 8))
    windowed = window(volume)
    assert isinstance(windowed, da.Array) and windowed.dtype == np.float32
    np.testing.assert_allclose(windowed[2].compute(), 0.5)


def test_brain_mask_covers_the_brain_not_skull_or_scalp(phantom):
    hu, rho = phantom_slice(phantom, 0.0)
    mask = brain_mask(hu, spacing=SPACING)
    assert dice(mask, rho < BRAIN) > 0.97
    assert not mask[rho >= BRAIN + 0.01].any()  # skull, scalp and air excluded
    assert mask[(rho < 0.5)].all()  # ventricles and lesion filled in


def test_calcification_and_skull_gap(phantom):
    hu, rho = phantom_slice(phantom, 10.0)
    hu[60:64, 60:64] = 250.0  # a calcification inside the brain: a hole, filled
    columns = np.abs(np.arange(SIZE) - SIZE // 2) < 3
    gap = (rho > BRAIN) & (rho < 0.96) & columns[None, :] & (np.arange(SIZE) < 40)[:, None]
    hu[gap] = 40.0  # a 4 mm gap in the skull at the front: closed before filling
    mask = brain_mask(hu, spacing=SPACING)
    assert mask[60:64, 60:64].all()
    assert dice(mask, rho < BRAIN) > 0.96
    assert not mask[rho >= 0.97].any()  # the scalp stays out


@pytest.mark.parametrize("case", ["above the head", "skull cap", "no skull", "air"])
def test_slices_without_brain_give_an_empty_mask(phantom, case):
    top = phantom.semi_axes[2]
    if case == "above the head":
        hu, _ = phantom_slice(phantom, top * 1.05)
    elif case == "skull cap":
        hu, _ = phantom_slice(phantom, top * 0.93)  # through bone and scalp only
    elif case == "no skull":
        hu = np.full((SIZE, SIZE), 30.0)  # soft tissue that no skull encloses
    else:
        hu = np.full((SIZE, SIZE), AIR_HU)
    mask = brain_mask(hu, spacing=SPACING)
    assert mask.shape == hu.shape and not mask.any()


@pytest.fixture(scope="module")
def series(tmp_path_factory, phantom):
    folder = tmp_path_factory.mktemp("ct")
    write_ct_series(folder, n_slices=24, size=SIZE, spacing=(5.0, SPACING, SPACING))
    return read_dicom(folder)[0]


def analytic_brain_ml(phantom: HeadPhantom) -> float:
    ax, ay, az = phantom.semi_axes
    return 4.0 / 3.0 * np.pi * ax * ay * az * BRAIN**3 / 1000.0


def test_volume_from_a_dicom_series_matches_the_phantom(series, phantom):
    progress: list[tuple[int, int]] = []
    masks = brain_mask_volume(series.levels[0], spacing=series.scale, min_area_mm2=100.0,
                              on_progress=lambda done, total: progress.append((done, total)))
    assert masks.shape == series.shape and masks.dtype == bool
    assert progress == [(k, 24) for k in range(1, 25)]
    volume_ml = masks.sum() * np.prod(series.scale) / 1000.0
    assert volume_ml == pytest.approx(analytic_brain_ml(phantom), rel=0.03)
    assert not masks[0].any() and not masks[-1].any()


def test_volume_can_be_stopped(series):
    calls = iter([False, False, True])
    with pytest.raises(InterruptedError, match="after 2 of 24"):
        brain_mask_volume(series.levels[0], spacing=series.scale, should_stop=lambda: next(calls))


def test_tilted_series_resampled(tmp_path, phantom):
    write_ct_series(tmp_path, n_slices=24, size=SIZE, spacing=(5.0, SPACING, SPACING),
                    tilt_deg=15.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = read_dicom(tmp_path, resample=True)[0]
    masks = brain_mask_volume(image.levels[0], spacing=image.scale, min_area_mm2=100.0)
    volume_ml = masks.sum() * np.prod(image.scale) / 1000.0
    assert volume_ml == pytest.approx(analytic_brain_ml(phantom), rel=0.05)


def test_extract_brain(phantom):
    hu, _ = phantom_slice(phantom, 0.0)
    mask = brain_mask(hu, spacing=SPACING)
    out = extract_brain(hu, spacing=SPACING)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[mask], hu[mask])
    assert np.all(out[~mask] == AIR_HU)
    np.testing.assert_array_equal(extract_brain(hu, mask=mask, fill_value=0.0)[~mask], 0.0)
    with pytest.raises(ValueError, match="does not match"):
        extract_brain(hu, mask=mask[:10])


def test_preprocess_ct_slice_is_the_recipe_model_input(phantom):
    hu, _ = phantom_slice(phantom, 0.0)
    mask = brain_mask(hu, spacing=SPACING)
    out = preprocess_ct_slice(hu, spacing=SPACING)
    assert out.shape == (256, 256) and out.dtype == np.float32
    big_mask = np.kron(mask, np.ones((2, 2), bool))  # 128 -> 256
    inner = big_mask & np.roll(big_mask, 3, 0) & np.roll(big_mask, -3, 0)
    assert abs(out[inner].mean()) < 0.1 and 0.8 < out[inner].std() < 1.1
    background = out[~np.kron(np.pad(mask, 2)[2:-2, 2:-2], np.ones((2, 2), bool))]
    assert np.allclose(background[:100], out[0, 0]) and out[0, 0] < out[inner].min() + 1e-3


def test_preprocess_pads_a_non_square_slice(phantom):
    hu, _ = phantom_slice(phantom, 0.0)
    wide = np.pad(hu, ((0, 0), (64, 64)), constant_values=AIR_HU)  # 128 x 256
    out = preprocess_ct_slice(wide, size=128, spacing=SPACING)
    square = preprocess_ct_slice(hu, size=64, spacing=SPACING)
    np.testing.assert_allclose(out[32:96, 32:96], square, atol=0.35)
    assert np.allclose(out[:20], out[0, 0])  # padding rows are background


def test_preprocess_without_brain_is_zero():
    out = preprocess_ct_slice(np.full((64, 64), AIR_HU), size=32)
    np.testing.assert_array_equal(out, 0.0)


def test_slice_quality(phantom):
    middle, _ = phantom_slice(phantom, 0.0)
    low, _ = phantom_slice(phantom, -0.85 * phantom.semi_axes[2])
    good = slice_quality(middle, spacing=SPACING)
    poor = slice_quality(low, spacing=SPACING)
    mask = brain_mask(middle, spacing=SPACING)
    assert good.usable and good.brain_fraction == pytest.approx(mask.mean())
    assert good.brain_area_mm2 == pytest.approx(mask.sum() * SPACING**2)
    assert not poor.usable and poor.brain_fraction < 0.05


@pytest.mark.slow
@pytest.mark.realdata
def test_real_ge_head_ct_intracranial_volume(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gantry tilt and uneven spacing are expected here
        image = read_dicom(shared_data / "ct_head_ge", resample=True)[0]
    masks = brain_mask_volume(image.levels[0], spacing=image.scale)
    volume_ml = masks.sum() * np.prod(image.scale) / 1000.0
    areas_cm2 = masks.sum(axis=(1, 2)) * image.scale[1] * image.scale[2] / 100.0
    # The series runs from the foramen magnum to the vertex: nearly the whole cranial cavity.
    assert 1200.0 < volume_ml < 1700.0, volume_ml  # measured: 1450 ml
    assert 150.0 < areas_cm2.max() < 220.0  # largest axial brain section
    assert areas_cm2[-1] == 0.0  # above the vertex
