"""Tests for napari_neuroseg.io._pyramid: lazily computed lower pyramid levels."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io._pyramid import extend_pyramid


def _mean_2x2(image: np.ndarray) -> np.ndarray:
    """Reference: 2x2 mean rounded half up, odd last row/column dropped."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    total = (
        image[0:h:2, 0:w:2].astype(np.int64)
        + image[1:h:2, 0:w:2]
        + image[0:h:2, 1:w:2]
        + image[1:h:2, 1:w:2]
    )
    return ((total + 2) // 4).astype(image.dtype)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(1001, 1539, 3), dtype=np.uint8)


def test_values_are_rounded_2x2_means_of_the_level_above(rgb):
    levels = extend_pyramid([da.from_array(rgb, chunks=(256, 256, 3))], min_level_size=100)
    expected = rgb
    for level in levels[1:]:
        expected = _mean_2x2(expected)
        np.testing.assert_array_equal(level.compute(), expected)
        assert level.dtype == np.uint8


def test_stops_at_min_level_size_and_halves_with_floor(rgb):
    levels = extend_pyramid([da.from_array(rgb, chunks=(256, 256, 3))], min_level_size=200)
    assert [lv.shape for lv in levels] == [
        (1001, 1539, 3),
        (500, 769, 3),
        (250, 384, 3),
        (125, 192, 3),
    ]
    assert max(levels[-2].shape[:2]) > 200 >= max(levels[-1].shape[:2])


def test_computed_levels_keep_the_tile_chunking(rgb):
    levels = extend_pyramid([da.from_array(rgb, chunks=(256, 256, 3))], min_level_size=100)
    for level in levels:
        assert level.chunks[0][0] == min(256, level.shape[0])
        assert level.chunks[1][0] == min(256, level.shape[1])
        assert all(c <= 256 for c in level.chunks[0] + level.chunks[1])
        assert level.chunks[2] == (3,)


def test_no_levels_added_when_already_small_enough(rgb):
    base = da.from_array(rgb, chunks=(256, 256, 3))
    assert extend_pyramid([base], min_level_size=2048) == [base]


def test_extends_from_the_smallest_native_level_and_leaves_input_alone():
    level0 = da.zeros((4000, 4000, 3), dtype=np.uint8, chunks=(512, 512, 3))
    # A native level 1 with its own content: the computed level must come from it, not level 0.
    level1 = da.full((2000, 2000, 3), 200, dtype=np.uint8, chunks=(512, 512, 3))
    native = [level0, level1]
    levels = extend_pyramid(native, min_level_size=600)
    assert native == [level0, level1]
    assert [lv.shape[:2] for lv in levels] == [(4000, 4000), (2000, 2000), (1000, 1000), (500, 500)]
    assert int(levels[-1][:10, :10].max().compute()) == 200


def test_grayscale_2d_levels(rgb):
    gray = rgb[..., 0]
    levels = extend_pyramid([da.from_array(gray, chunks=(128, 128))], min_level_size=300)
    np.testing.assert_array_equal(levels[1].compute(), _mean_2x2(gray))
    assert levels[1].ndim == 2


def test_float_levels_use_the_plain_mean():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    half = extend_pyramid([da.from_array(image, chunks=2)], min_level_size=2)[1].compute()
    np.testing.assert_allclose(half, [[2.5, 4.5], [10.5, 12.5]])


def test_is_lazy_and_reads_only_the_chunks_it_needs():
    reads = []

    def block(block_id=None):
        reads.append(block_id)
        return np.full((256, 256, 3), 10 * block_id[0] + block_id[1], dtype=np.uint8)

    base = da.map_blocks(
        block, chunks=((256,) * 16, (256,) * 16, (3,)), dtype=np.uint8, meta=np.empty((0, 0, 0))
    )
    levels = extend_pyramid([base], min_level_size=512)
    assert reads == []  # building the pyramid reads nothing
    with dask.config.set(scheduler="synchronous"):
        tile = levels[2][0:256, 0:256].compute()
    # level 2 chunk (0, 0) covers level-0 chunks (0..3, 0..3) only
    assert sorted({(r[0], r[1]) for r in reads}) == [(i, j) for i in range(4) for j in range(4)]
    assert tile.shape == (256, 256, 3)


def test_reads_pixels_from_a_direct_source_instead_of_dask(rgb):
    class Source:
        """The same pixels as the dask level, counting the regions asked for."""

        shape, dtype, ndim = rgb.shape, rgb.dtype, 3

        def __init__(self):
            self.requests = []

        def __getitem__(self, key):
            self.requests.append(key)
            return rgb[key]

    def refuse(block):
        raise AssertionError("the dask level must not be computed when a source is given")

    level = da.from_array(rgb, chunks=(256, 256, 3)).map_blocks(refuse, dtype=np.uint8)
    source = Source()
    levels = extend_pyramid([level], min_level_size=300, source=source)
    assert source.requests == []
    np.testing.assert_array_equal(levels[2].compute(), _mean_2x2(_mean_2x2(rgb)))
    assert source.requests
    with pytest.raises(ValueError, match="source shape"):
        extend_pyramid([level], 300, source=rgb[:10])


def test_rejects_empty_input_and_bad_size():
    with pytest.raises(ValueError, match="at least one level"):
        extend_pyramid([], 2048)
    with pytest.raises(ValueError, match="min_level_size"):
        extend_pyramid([da.zeros((8, 8), chunks=4)], 0)
