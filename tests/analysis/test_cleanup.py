"""3-D connected-component clean-up and lesion volumes (pure, no viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_neuroseg.analysis.cleanup import (
    clean_labels,
    min_voxels_for_volume,
    volume_ml,
    voxel_volume_ml,
)
from napari_neuroseg.samples.mri import mri_phantom


@pytest.fixture
def blobs() -> np.ndarray:
    """A big 4-slice blob (4*6*6 = 144 voxels), a small 3-slice one (3*2*2 = 12) and a
    one-slice blob (5*5 = 25)."""
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[1:5, 2:8, 2:8] = 1
    labels[2:5, 20:22, 20:22] = 1
    labels[6, 10:15, 20:25] = 1
    return labels


def test_single_slice_blob_is_dropped_others_kept(blobs):
    before = blobs.copy()
    result = clean_labels(blobs, drop_single_slice=True)
    np.testing.assert_array_equal(blobs, before)  # input untouched
    assert result.labels[6].sum() == 0
    assert result.labels[1:5, 2:8, 2:8].all() and result.labels[2:5, 20:22, 20:22].all()
    assert (result.n_components, result.n_single_slice, result.n_small) == (3, 1, 0)
    assert result.voxels_removed == 25 and result.n_kept == 2


def test_small_component_is_dropped_big_kept(blobs):
    result = clean_labels(blobs, min_voxels=20)
    assert result.labels[2:5, 20:22, 20:22].sum() == 0
    assert np.count_nonzero(result.labels) == 144 + 25
    assert (result.n_small, result.voxels_removed) == (1, 12)
    both = clean_labels(blobs, min_voxels=20, drop_single_slice=True)
    assert np.count_nonzero(both.labels) == 144
    assert (both.n_small, both.n_single_slice, both.n_kept) == (1, 1, 1)


def test_no_options_keep_everything_and_threshold_is_inclusive(blobs):
    assert np.array_equal(clean_labels(blobs).labels, blobs)
    assert np.array_equal(clean_labels(blobs, min_voxels=12).labels, blobs)  # 12 is not < 12


def test_connectivity_decides_diagonal_neighbours():
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[0, 2, 2] = labels[1, 3, 3] = labels[2, 4, 4] = 1  # a diagonal chain over 3 slices
    assert np.count_nonzero(clean_labels(labels, drop_single_slice=True).labels) == 3
    faces = clean_labels(labels, drop_single_slice=True, connectivity=1)
    assert faces.n_components == 3 and np.count_nonzero(faces.labels) == 0


def test_classes_are_separate_components():
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[0:3, 1:3, 1:3] = 1
    labels[1, 3:5, 1:3] = 2  # touches class 1 but is its own one-slice component
    result = clean_labels(labels, drop_single_slice=True)
    assert set(np.unique(result.labels)) == {0, 1} and result.n_components == 2


def test_volume_in_ml_is_count_times_voxel_volume(blobs):
    scale = (5.0, 0.5, 0.5)
    assert voxel_volume_ml(scale) == pytest.approx(1.25e-3)
    assert volume_ml(blobs, scale) == pytest.approx((144 + 12 + 25) * 1.25e-3)
    assert volume_ml(blobs, (1.0, 1.0, 1.0)) == pytest.approx(0.181)
    assert voxel_volume_ml((5000.0, 500.0, 500.0), "um") == pytest.approx(1.25e-3)
    _, mask = mri_phantom(n_slices=10, size=48, seed=3)
    assert volume_ml(mask, scale) == pytest.approx(np.count_nonzero(mask) * 1.25e-3)


def test_min_voxels_from_ml():
    scale = (2.0, 1.0, 1.0)  # 0.002 ml per voxel
    assert min_voxels_for_volume(0.0, scale) == 0
    assert min_voxels_for_volume(0.01, scale) == 5
    assert min_voxels_for_volume(0.011, scale) == 6


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: voxel_volume_ml((1.0, 1.0)), "three positive"),
        (lambda: voxel_volume_ml((1.0, 0.0, 1.0)), "three positive"),
        (lambda: voxel_volume_ml((1.0, 1.0, 1.0), "furlong"), "unknown length unit"),
        (lambda: clean_labels(np.zeros((4, 4), np.uint8)), r"\(z, y, x\)"),
        (lambda: clean_labels(np.zeros((2, 4, 4), np.uint8), min_voxels=-1), "min_voxels"),
        (lambda: clean_labels(np.zeros((2, 4, 4), np.uint8), connectivity=4), "connectivity"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()
