"""Level choice, lazy resampling and world geometry."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from napari_neuroseg.engine.errors import EngineError
from napari_neuroseg.engine.levels import ResampledArray, choose_level, pyramid_shapes
from napari_neuroseg.engine.tiling import Region

MPPS = [0.25, 0.5, 1.0, 4.0]


@pytest.mark.parametrize(
    ("target", "level", "factor"),
    [
        (0.25, 0, 1.0),
        (0.5, 1, 1.0),
        (0.52, 1, 1.0),  # 4 % off: used as is
        (1.05, 2, 1.0),
        (0.7, 1, 1.4),  # 40 % off: resample level 1
        (2.0, 2, 2.0),
        (16.0, 3, 4.0),  # coarser than every level: shrink the coarsest
        (0.1, 0, 0.4),  # finer than level 0: upsample level 0
    ],
)
def test_choose_level(target, level, factor):
    choice = choose_level(MPPS, target)
    assert choice.level == level
    assert choice.factor == pytest.approx(factor)
    assert choice.resample == (factor != 1.0)
    assert choice.working_mpp == pytest.approx(target if factor != 1.0 else MPPS[level])


def test_choose_level_never_picks_a_level_too_coarse():
    # 1.0 is 11 % coarser than 0.9: level 1 resampled rather than level 2 used as is
    choice = choose_level(MPPS, 0.9)
    assert choice.level == 1 and choice.factor == pytest.approx(1.8)


@pytest.mark.parametrize("bad", [[], [0.25, 0.0], [float("nan")]])
def test_choose_level_rejects_bad_levels(bad):
    with pytest.raises(EngineError, match="positive"):
        choose_level(bad, 1.0)
    with pytest.raises(EngineError, match="target pixel size"):
        choose_level(MPPS, -1.0)


def test_geometry_puts_working_pixels_on_level0_pixels():
    # working pixel i spans level-0 pixels [4i, 4i + 4): centre at 4i + 1.5 level-0 pixels
    choice = choose_level(MPPS, 1.0)
    scale, translate = choice.geometry(base_translate=(10.0, 20.0))
    assert scale == (1.0, 1.0)
    assert translate == pytest.approx((10.0 + 1.5 * 0.25, 20.0 + 1.5 * 0.25))
    assert choose_level(MPPS, 0.25).geometry() == ((0.25, 0.25), (0.0, 0.0))


def test_region_from_base():
    choice = choose_level(MPPS, 1.0)  # factor 4 from level 0
    assert choice.region_from_base(Region(10, 0, 101, 40), (100, 100)) == Region(2, 0, 26, 10)
    assert choice.region_from_base(Region(0, 0, 1000, 1000), (100, 100)) == Region(0, 0, 100, 100)


def test_working_array_is_the_level_or_a_resampled_view():
    level = np.zeros((100, 80, 3), np.uint8)
    assert choose_level(MPPS, 0.5).working_array(level) is level
    view = choose_level(MPPS, 0.7).working_array(level)
    assert isinstance(view, ResampledArray)
    assert view.shape == (71, 57, 3) and view.dtype == np.float32


def test_resampled_array_downsamples_smoothly_and_lazily():
    y, x = np.mgrid[0:200, 0:160]
    source = (np.sin(y / 9.0) + np.cos(x / 13.0)).astype(np.float32)
    view = ResampledArray(da.from_array(source, chunks=32), 2.0)
    assert view.shape == (100, 80)
    full = view[0:100, 0:80]
    yy, xx = np.mgrid[0:100, 0:80] * 2.0 + 0.5
    expected = np.sin(yy / 9.0) + np.cos(xx / 13.0)
    # a smooth function sampled at the pixel centres, up to the anti-alias blur
    assert np.abs(full - expected).max() < 0.02


def test_resampled_slices_stitch_without_seams():
    rng = np.random.default_rng(3)
    source = rng.random((90, 70, 3)).astype(np.float32)
    view = ResampledArray(source, 1.5)
    full = view[0 : view.shape[0], 0 : view.shape[1]]
    assert full.shape == (60, 47, 3)
    top, bottom = view[0:23, 0:47], view[23:60, 0:47]
    np.testing.assert_allclose(np.concatenate([top, bottom]), full, atol=1e-6)
    left, right = view[0:60, 0:11], view[0:60, 11:47]
    np.testing.assert_allclose(np.concatenate([left, right], axis=1), full, atol=1e-6)


def test_resampled_matches_scipy_on_interior():
    rng = np.random.default_rng(4)
    source = rng.random((64, 64)).astype(np.float32)
    view = ResampledArray(source, 3.0)
    out = view[5:15, 5:15]
    blurred = ndimage.gaussian_filter(source, 1.0, mode="reflect")
    cy = (np.arange(5, 15) + 0.5) * 3 - 0.5
    grid = np.meshgrid(cy, cy, indexing="ij")
    np.testing.assert_allclose(out, ndimage.map_coordinates(blurred, grid, order=1), atol=1e-5)


def test_resampled_array_rejects_bad_input():
    with pytest.raises(EngineError, match="positive"):
        ResampledArray(np.zeros((4, 4)), 0)
    with pytest.raises(EngineError, match="'yx' or 'yxc'"):
        ResampledArray(np.zeros((2, 4, 4, 3)), 2)
    with pytest.raises(EngineError, match="plain slices"):
        ResampledArray(np.zeros((8, 8)), 2)[0:4:2, 0:4]


@pytest.mark.parametrize("shape, chunk, min_side, expected", [
    ((102, 154), 256, 512, [(102, 154), (51, 77)]),  # one chunk: still two levels
    ((1, 1), 256, 512, [(2, 2), (1, 1)]),
    ((101, 153), 256, 512, [(102, 154), (51, 77)]),  # padded so level 1 is exactly half
    ((1024, 1536), 256, 512, [(1024, 1536), (512, 768), (256, 384)]),
    ((1000, 700), 64, 100, [(1008, 704), (504, 352), (252, 176), (126, 88), (63, 44)]),
])
def test_pyramid_shapes_halve_exactly_with_at_least_two_levels(shape, chunk, min_side,
                                                                expected):
    shapes = pyramid_shapes(shape, chunk, min_side)
    assert shapes == expected
    assert all(a == 2 * b for s0, s1 in itertools.pairwise(shapes)
               for a, b in zip(s0, s1, strict=True))
    # halving stops at the first level within max(min_side, chunk), unless at level 1
    assert len(shapes) == 2 or max(shapes[-2]) > max(min_side, chunk) >= max(shapes[-1])
