"""Nucleus types from HoVer-Net's type branch: per nucleus, counted, and only when there."""

import dataclasses

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_neuroseg.analysis.nuclei_types import (
    classify_nuclei,
    pixel_types,
    type_colors,
    type_image,
    type_names_of,
)
from napari_neuroseg.analysis.region import segment_nuclei
from napari_neuroseg.analysis.slide import AnalysisError, plan_slide
from napari_neuroseg.engine import Region
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.hovernet import hv_targets
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner

TYPES = ["background", "tumour", "immune"]
BACKGROUND_RGB = (235, 190, 210)
TUMOUR_RGB = (90, 40, 140)  # purple: type 1
IMMUNE_RGB = (40, 40, 60)  # near black: type 2


def two_type_slide(shape=(300, 360), spacing=30, radius=7):
    """Dark discs, purple in even columns and near black in odd ones; (image, n1, n2)."""
    image = np.empty((*shape, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    counts = [0, 0]
    for cy in range(spacing // 2, shape[0] - radius, spacing):
        for k, cx in enumerate(range(spacing // 2, shape[1] - radius, spacing)):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = (TUMOUR_RGB, IMMUNE_RGB)[k % 2]
            counts[k % 2] += 1
    lazy = LazyImage(levels=[da.from_array(image, chunks=(128, 128, 3))], axes="yxc",
                     scale=(0.5, 0.5), unit="um", name="typed discs", modality="slide",
                     source="memory:typed-discs")
    return lazy, *counts


class TypedOracle:
    """A HoVer-Net with a type branch that knows the discs: purple is type 1, black type 2."""

    output_channels = 4 + len(TYPES)

    def __call__(self, batch):
        out = np.zeros((len(batch), 4 + len(TYPES), *batch.shape[2:]), np.float32)
        for i, patch in enumerate(batch):
            dark = patch.mean(axis=0) < 150
            out[i, 1], out[i, 0] = dark, ~dark
            out[i, 2:4] = hv_targets(ndi.label(dark)[0])
            immune = dark & (patch[0] < 65)
            out[i, 4], out[i, 5], out[i, 6] = ~dark, dark & ~immune, immune
        return out


class UntypedOracle(TypedOracle):
    output_channels = 4

    def __call__(self, batch):
        return super().__call__(batch)[:, :4]


def hovernet_spec(type_classes=(), **arch):
    base = ModelRegistry().get("nuclei-hovernet")
    return dataclasses.replace(
        base, arch_kwargs={**base.arch_kwargs, **arch},
        extra={**base.extra, "type_classes": list(type_classes)})


def test_each_nucleus_gets_its_type_counted_per_mm2():
    image, n_tumour, n_immune = two_type_slide()
    plan = plan_slide(image, hovernet_spec(TYPES), tissue_only=False)
    result = segment_nuclei(plan, TypedOracle(), Region(0, 0, 300, 360))
    assert result.typed and result.type_names == tuple(TYPES)
    assert result.count == n_tumour + n_immune
    assert set(result.types) == set(range(1, result.count + 1))
    assert result.type_counts == {"tumour": n_tumour, "immune": n_immune}
    area = 300 * 360 * (0.5e-3) ** 2
    assert result.type_density == pytest.approx({"tumour": n_tumour / area,
                                                 "immune": n_immune / area})
    assert sum(result.type_density.values()) == pytest.approx(result.density)
    # the type image paints every nucleus with its type, and purple nuclei are tumour
    pixels = np.asarray(image.levels[0])
    types = result.type_labels
    assert types.dtype == np.uint8 and types.shape == result.data.shape
    np.testing.assert_array_equal(types > 0, result.data > 0)
    purple = np.all(pixels == TUMOUR_RGB, axis=2) & (result.data > 0)
    black = np.all(pixels == IMMUNE_RGB, axis=2) & (result.data > 0)
    assert np.all(types[purple] == 1) and np.all(types[black] == 2)


def test_no_type_branch_or_no_type_names_gives_no_types():
    image, _, _ = two_type_slide()
    region = Region(0, 0, 300, 360)
    untyped = segment_nuclei(plan_slide(image, hovernet_spec(), tissue_only=False),
                             UntypedOracle(), region)
    assert untyped.count > 0
    assert untyped.types == {} and untyped.type_names == () and untyped.type_labels is None
    assert not untyped.typed and untyped.type_counts == {} and untyped.type_density == {}
    # type probabilities but a spec that names no types: nothing invented
    unnamed = segment_nuclei(plan_slide(image, hovernet_spec(), tissue_only=False),
                             TypedOracle(), region)
    assert unnamed.count == untyped.count and unnamed.types == {} and not unnamed.typed


def test_a_spec_naming_other_types_than_the_model_gives_is_an_error():
    image, _, _ = two_type_slide()
    plan = plan_slide(image, hovernet_spec(["background", "a", "b", "c"]), tissue_only=False)
    with pytest.raises(AnalysisError, match="3 type probabilities but 4 type classes"):
        segment_nuclei(plan, TypedOracle(), Region(0, 0, 300, 360))


@pytest.mark.parametrize("n_types", [None, 3])
def test_a_tiny_random_hovernet(n_types):
    """The real network and runner: with a type branch every nucleus gets a type."""
    image, _, _ = two_type_slide(shape=(128, 128))
    spec = hovernet_spec(TYPES if n_types else (), n_types=n_types, base_features=4,
                         encoder_depth=2, blocks_per_level=1)
    runner = ModelRunner.from_spec(spec, device="cpu", batch_size=2)
    plan = plan_slide(image, spec, tissue_only=False)
    # a threshold of 0 makes the random network find nuclei
    result = segment_nuclei(plan, runner, Region(0, 0, 128, 128),
                            postprocess={"np_threshold": 0.0, "min_size": 1})
    assert result.count > 0
    if n_types is None:
        assert result.types == {} and not result.typed
    else:
        assert result.type_names == tuple(TYPES)
        assert set(result.types) == set(range(1, result.count + 1))
        assert set(result.types.values()) <= {0, 1, 2}
        assert sum(result.type_counts.values()) == result.count


def test_helpers():
    labels = np.array([[0, 1, 1], [2, 2, 0], [3, 0, 0]])
    probs = np.zeros((3, 3, 3), np.float32)
    probs[1][labels == 1] = 1
    probs[2][labels == 2] = 1
    probs[0][labels == 3] = 1  # no pixel votes for a nuclear type
    probs[0][labels == 0] = 1
    types = classify_nuclei(labels, probs)
    assert types == {1: 1, 2: 2, 3: 0}
    np.testing.assert_array_equal(type_image(labels, types),
                                  [[0, 1, 1], [2, 2, 0], [0, 0, 0]])
    assert classify_nuclei(np.zeros((3, 3), int), probs) == {}
    np.testing.assert_array_equal(pixel_types(probs)[labels == 2], 2)
    assert pixel_types(probs).dtype == np.uint8 and pixel_types(probs).min() >= 1
    colors = type_colors(TYPES)
    assert len(colors) == 3 and colors[0] == "#000000" and len(set(colors)) == 3
    spec = hovernet_spec(TYPES)
    assert type_names_of(spec, 7) == tuple(TYPES) and type_names_of(spec, 4) == ()
    assert type_names_of(hovernet_spec(), 7) == ()
