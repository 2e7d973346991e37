"""Tests for napari_neuroseg.models.hovernet_post (marker-controlled watershed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_neuroseg.models.hovernet import hv_targets
from napari_neuroseg.models.hovernet_post import (
    PostprocessOptions,
    hovernet_instances,
    instance_types,
    remove_small_objects,
    sobel,
)
from napari_neuroseg.models.instance_metrics import aggregated_jaccard_index, match_instances


def _touching_discs(radius: int, spacing: int) -> np.ndarray:
    """Ten discs in two staggered rows of five, neighbours overlapping (Voronoi split)."""
    shape = (2 * radius + spacing + 30, 5 * spacing + 2 * radius + 30)
    centres = [
        (radius + 10 + r * spacing, radius + 10 + c * spacing + r * spacing // 2)
        for r in range(2)
        for c in range(5)
    ]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist = np.stack([np.hypot(yy - a, xx - b) for a, b in centres])
    return np.where(dist.min(0) <= radius, dist.argmin(0) + 1, 0).astype(np.int32)


def _assert_separated(labels: np.ndarray, instances: np.ndarray) -> None:
    true_ids, _, iou = match_instances(labels, instances, iou_threshold=0.5)
    assert instances.dtype == np.int32
    assert instances.max() == labels.max() == 10
    assert len(true_ids) == 10 and iou.min() > 0.9


@pytest.mark.parametrize(("radius", "spacing", "ksize"), [(10, 16, 21), (12, 20, 21), (6, 10, 11)])
def test_separates_touching_nuclei_from_perfect_maps(radius, spacing, ksize):
    labels = _touching_discs(radius, spacing)
    assert ndi.label(labels > 0)[1] == 1  # all ten form one connected blob
    prob = (labels > 0).astype(np.float32)
    instances = hovernet_instances(prob, hv_targets(labels), ksize=ksize)
    _assert_separated(labels, instances)
    assert aggregated_jaccard_index(labels, instances) > 0.95


def test_separates_touching_nuclei_from_noisy_maps():
    rng = np.random.default_rng(0)
    labels = _touching_discs(10, 16)
    hv = ndi.gaussian_filter(hv_targets(labels), (0, 1, 1)) + rng.normal(0, 0.1, (2, *labels.shape))
    prob = ndi.gaussian_filter((labels > 0).astype(float), 1) + rng.normal(0, 0.1, labels.shape)
    instances = hovernet_instances(np.clip(prob, 0, 1), hv)
    true_ids, _, iou = match_instances(labels, instances)
    assert instances.max() == 10 and len(true_ids) == 10 and iou.min() > 0.8


def test_kernel_too_large_for_small_nuclei_merges_them():
    # documents why ksize must scale with nucleus size: 21 is far too smooth for radius 6
    labels = _touching_discs(6, 10)
    instances = hovernet_instances((labels > 0).astype(float), hv_targets(labels), ksize=21)
    assert instances.max() < 10


def test_empty_and_small_foreground():
    prob = np.zeros((20, 20))
    hv = np.zeros((2, 20, 20))
    out = hovernet_instances(prob, hv)
    assert out.dtype == np.int32 and not out.any()
    prob[5:7, 5:7] = 1.0  # 4 pixels < min_size
    assert not hovernet_instances(prob, hv, min_size=10).any()


def test_input_errors():
    with pytest.raises(ValueError, match=r"hv \(2, H, W\)"):
        hovernet_instances(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="odd"):
        hovernet_instances(np.zeros((8, 8)), np.zeros((2, 8, 8)), ksize=4)


@pytest.mark.parametrize("ksize", [3, 5])
def test_sobel_matches_opencv_kernels(ksize):
    # OpenCV's d/dx kernels: ksize 3: [-1 0 1] x [1 2 1]^T; ksize 5: [-1 -2 0 2 1] x [1 4 6 4 1]^T
    derivative = {3: [-1, 0, 1], 5: [-1, -2, 0, 2, 1]}[ksize]
    smooth = {3: [1, 2, 1], 5: [1, 4, 6, 4, 1]}[ksize]
    kernel_x = np.outer(smooth, derivative).astype(float)
    image = np.random.default_rng(1).random((9, 11))
    np.testing.assert_allclose(
        sobel(image, axis=1, ksize=ksize), ndi.correlate(image, kernel_x, mode="mirror"), atol=1e-12
    )
    np.testing.assert_allclose(
        sobel(image, axis=0, ksize=ksize),
        ndi.correlate(image, kernel_x.T, mode="mirror"),
        atol=1e-12,
    )


def test_instance_types_majority_vote():
    instances = np.array([[1, 1, 1, 0], [2, 2, 2, 0], [3, 3, 0, 0]])
    pixel_type = np.array([[1, 1, 2, 3], [0, 0, 3, 1], [0, 0, 2, 2]])
    tp_prob = np.eye(4)[pixel_type].transpose(2, 0, 1)  # one-hot (T, H, W)
    # instance 2: background wins the vote but a nucleus type is present -> type 3
    assert instance_types(instances, tp_prob) == {1: 1, 2: 3, 3: 0}
    with pytest.raises(ValueError, match="tp_prob"):
        instance_types(instances, tp_prob[:, :2])


def test_remove_small_objects_leaves_input_untouched():
    labels = np.array([[1, 1, 1, 0, 2], [1, 0, 0, 0, 2], [0, 3, 0, 0, 0]])
    before = labels.copy()
    out = remove_small_objects(labels, 3)
    np.testing.assert_array_equal(labels, before)
    np.testing.assert_array_equal(out, np.where(labels == 1, 1, 0))


def test_small_nuclei_keep_their_markers_with_a_smaller_opening_and_unmarked_ones_are_kept():
    """At 0.5 µm/px nuclei are 3-4 px in radius: the paper's radius-2 opening erases their
    markers and the watershed drops them; radius 1 keeps them, and keep_unmarked keeps a
    nucleus whose marker is lost anyway."""
    labels = _touching_discs(3, 8)
    prob = (labels > 0).astype(np.float32)
    hv = hv_targets(labels)
    paper = hovernet_instances(prob, hv, ksize=5, min_size=4)
    small = hovernet_instances(prob, hv, ksize=5, min_size=4, marker_radius=1)
    kept = hovernet_instances(prob, hv, ksize=5, min_size=4, marker_radius=2, keep_unmarked=True)
    assert paper.max() < 10 <= small.max() + 1
    assert len(match_instances(labels, small)[0]) >= 9
    assert np.all(kept[prob > 0] > 0)  # every nuclear pixel belongs to some instance
    lone = np.zeros((20, 20), np.float32)
    lone[8:11, 8:11] = 1  # a 3x3 nucleus: no marker survives any opening
    flat = np.zeros((2, 20, 20), np.float32)
    assert hovernet_instances(lone, flat, ksize=3, min_size=4, marker_radius=2).max() == 0
    assert hovernet_instances(lone, flat, ksize=3, min_size=4, marker_radius=2,
                              keep_unmarked=True).max() == 1


def test_postprocess_options_from_spec_overrides_and_validation():
    spec = dataclasses.make_dataclass("Spec", ["extra"])(
        {"postprocess": {"ksize": 21, "min_size": 4, "stain": "ignored"}})
    assert PostprocessOptions().as_dict() == {
        "np_threshold": 0.5, "marker_threshold": 0.4, "min_size": 10, "ksize": 11,
        "marker_radius": 2, "keep_unmarked": False}
    saved = PostprocessOptions.from_spec(spec)
    assert (saved.ksize, saved.min_size, saved.np_threshold) == (21, 4, 0.5)
    tuned = PostprocessOptions.from_spec(spec, {"min_size": 7, "unknown": 1})
    assert (tuned.ksize, tuned.min_size) == (21, 7)
    assert PostprocessOptions.from_spec(None) == PostprocessOptions()
    assert PostprocessOptions.names()[:2] == ("np_threshold", "marker_threshold")
    with pytest.raises(dataclasses.FrozenInstanceError):
        saved.ksize = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="ksize must be an odd integer >= 3, got 4"):
        PostprocessOptions(ksize=4)
    with pytest.raises(ValueError, match=r"marker_threshold must be in \[0, 1\], got 1.5"):
        PostprocessOptions.from_spec(spec, {"marker_threshold": 1.5})
    out = hovernet_instances(np.zeros((16, 16)), np.zeros((2, 16, 16)), **saved.as_dict())
    assert out.shape == (16, 16) and out.max() == 0
