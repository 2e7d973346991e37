"""Tile grid geometry, regions and reflected patch reads."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.engine.errors import EngineError
from napari_neuroseg.engine.tiling import (
    Region,
    TileGrid,
    coerce_region,
    read_patches,
    read_window,
    reflect_indices,
)


def test_region_properties_and_slices():
    r = Region(2, 3, 10, 7)
    assert r.shape == (8, 4)
    assert r.start == (2, 3)
    assert r.slices == (slice(2, 10), slice(3, 7))
    assert r.center == (5.5, 4.5)
    assert str(r) == "y 2:10, x 3:7"
    assert r.intersects(Region(9, 6, 20, 20))
    assert not r.intersects(Region(10, 0, 20, 20))


def test_coerce_region_accepts_none_and_slices():
    assert coerce_region(None, (5, 6)) == Region(0, 0, 5, 6)
    assert coerce_region((slice(1, 3), slice(2, 6)), (5, 6)) == Region(1, 2, 3, 6)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ((slice(0, 6), slice(0, 6)), "outside the image of height 5 and width 6"),
        ((slice(-1, 3), slice(0, 6)), "outside"),
        ((slice(3, 3), slice(0, 6)), "empty"),
        ((slice(None, 3), slice(0, 6)), "explicit starts"),
        ((slice(0, 3, 2), slice(0, 6)), "step"),
        ((slice(0, 3),), "two slices"),
    ],
)
def test_coerce_region_errors_name_the_problem(region, message):
    with pytest.raises(EngineError, match=message):
        coerce_region(region, (5, 6))


def test_grid_geometry():
    grid = TileGrid((100, 70), 32, halo=4, overlap=6)
    assert grid.stride == (18, 18)
    assert grid.n_tiles == (6, 4)
    t = grid.tile(2, 1)
    assert t.core == Region(36, 18, 54, 36)
    assert t.window == Region(33, 15, 57, 39)
    assert t.read == Region(29, 11, 61, 43)
    assert t.read.shape == (32, 32)
    assert t.key == (None, 2, 1)
    assert grid.key() == (32, 32, 4, 6)


def test_grid_rejects_patch_without_core():
    with pytest.raises(EngineError, match="leaves no core"):
        TileGrid((100, 100), 16, halo=8)
    with pytest.raises(EngineError, match="must be >= 0"):
        TileGrid((100, 100), 16, halo=-1)
    with pytest.raises(EngineError, match="empty image"):
        TileGrid((0, 100), 16)


def test_cores_partition_the_image():
    grid = TileGrid((45, 37), (16, 12), halo=2)
    cover = np.zeros((45, 37), int)
    for t in grid.tiles_in(Region(0, 0, 45, 37), blended=False):
        ys = slice(t.core.y0, min(t.core.y1, 45))
        xs = slice(t.core.x0, min(t.core.x1, 37))
        cover[ys, xs] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize("overlap", [0, 5, 24])
@pytest.mark.parametrize("blended", [False, True])
def test_tiles_in_matches_brute_force(overlap, blended):
    grid = TileGrid((90, 77), 32, halo=2, overlap=overlap)
    region = Region(13, 40, 61, 77)
    everything = [grid.tile(r, c) for r in range(grid.n_tiles[0]) for c in range(grid.n_tiles[1])]
    attr = "window" if blended else "core"
    expected = {t.key for t in everything if getattr(t, attr).intersects(region)}
    got = grid.tiles_in(region, blended=blended, z=None)
    assert {t.key for t in got} == expected
    assert len(got) == len(expected)


@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("pad", [1, 4, 17])
def test_reflect_indices_match_numpy_pad(size, pad):
    a = np.arange(size)
    expected = np.pad(a, pad, mode="reflect")
    assert np.array_equal(a[reflect_indices(-pad, size + pad, size)], expected)


def test_read_patches_reflects_at_borders_and_reads_lazily():
    rng = np.random.default_rng(1)
    img = rng.random((40, 30, 3)).astype(np.float32)
    grid = TileGrid((40, 30), 16, halo=5)
    tiles = [grid.tile(0, 0), grid.tile(1, 1), grid.tile(6, 4)]
    patches = read_patches(da.from_array(img, chunks=8), tiles)
    padded = np.pad(img, ((40, 40), (40, 40), (0, 0)), mode="reflect")
    for t, p in zip(tiles, patches, strict=True):
        assert p.shape == (16, 16, 3)
        expected = padded[t.read.y0 + 40 : t.read.y1 + 40, t.read.x0 + 40 : t.read.x1 + 40]
        np.testing.assert_array_equal(p, expected)


def test_read_window_of_image_smaller_than_halo():
    img = np.arange(6, dtype=np.float32).reshape(2, 3)
    window = read_window(img, Region(-10, -10, 12, 13))
    np.testing.assert_array_equal(window, np.pad(img, 10, mode="reflect"))
    one = read_window(np.full((1, 1), 7.0), Region(-3, -3, 4, 4))
    assert one.shape == (7, 7) and (one == 7).all()
