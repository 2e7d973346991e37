"""Direct (dask-free) tile reads from the reader behind a slide level."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback

from napari_neuroseg.engine.direct import DIRECT_READER_ATTR, direct_reader, load_boxes
from napari_neuroseg.engine.levels import ResampledArray
from napari_neuroseg.engine.tiling import Region, TileGrid, read_patches, read_window
from napari_neuroseg.io import _slide_common
from napari_neuroseg.io.slide import read_slide
from napari_neuroseg.samples.slide import write_synthetic_slide


class CountingReader:
    """A numpy image behind the region-reader interface, counting its reads."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.shape, self.dtype, self.ndim = image.shape, image.dtype, image.ndim
        self.calls: list[tuple[slice, ...]] = []

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        self.calls.append(key)
        return self.image[key].copy()


class CountComputes(Callback):
    """Counts the dask computations started while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _start(self, dsk) -> None:
        self.count += 1


def _level(reader: CountingReader, chunks: int = 16) -> da.Array:
    array = da.from_array(reader, chunks=chunks, asarray=False, fancy=False)
    setattr(array, DIRECT_READER_ATTR, reader)
    reader.calls.clear()  # from_array's probe for the array's meta
    return array


def _image(shape=(50, 70, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def test_io_spells_the_same_attribute():
    assert _slide_common.DIRECT_READER_ATTR == DIRECT_READER_ATTR


def test_direct_reader_only_for_dask_arrays_that_name_a_matching_reader():
    reader = CountingReader(_image())
    level = _level(reader)
    assert direct_reader(level) is reader
    assert direct_reader(level[:10]) is None  # a derived array is read through dask
    assert direct_reader(level.rechunk(32)) is None
    assert direct_reader(reader.image) is None
    assert direct_reader(da.from_array(reader.image)) is None
    wrong = da.zeros((5, 5, 3), dtype=np.uint8)
    setattr(wrong, DIRECT_READER_ATTR, reader)
    assert direct_reader(wrong) is None  # shape differs from the reader's


def test_load_boxes_reads_each_box_once_without_dask():
    reader = CountingReader(_image())
    boxes = [(slice(0, 16), slice(5, 21)), (slice(30, 50), slice(60, 70))]
    with CountComputes() as counter:
        out = load_boxes(_level(reader), boxes)
    assert counter.count == 0
    assert reader.calls == boxes
    for data, box in zip(out, boxes, strict=True):
        np.testing.assert_array_equal(data, reader.image[box])


def test_load_boxes_other_dask_arrays_in_one_compute_and_numpy_by_slicing():
    image = _image()
    boxes = [(slice(0, 16), slice(5, 21)), (slice(30, 50), slice(60, 70))]
    with CountComputes() as counter:
        out = load_boxes(da.from_array(image, chunks=16), boxes)
    assert counter.count == 1
    with CountComputes() as counter:
        plain = load_boxes(image, boxes)
    assert counter.count == 0
    for a, b, box in zip(out, plain, boxes, strict=True):
        np.testing.assert_array_equal(a, image[box])
        np.testing.assert_array_equal(b, image[box])


def test_read_patches_fast_path_reflects_like_dask_and_computes_nothing():
    image = _image((40, 53, 3), seed=1)
    reader = CountingReader(image)
    grid = TileGrid((40, 53), 24, halo=6)
    tiles = [grid.tile(r, c) for r in range(grid.n_tiles[0]) for c in range(grid.n_tiles[1])]
    expected = read_patches(da.from_array(image, chunks=16), tiles)
    with CountComputes() as counter:
        fast = read_patches(_level(reader), tiles)
    assert counter.count == 0 and len(reader.calls) == len(tiles)
    padded = np.pad(image, ((6, 30), (6, 30), (0, 0)), mode="reflect")
    for tile, a, b in zip(tiles, fast, expected, strict=True):
        np.testing.assert_array_equal(a, b)
        r = tile.read
        np.testing.assert_array_equal(a, padded[r.y0 + 6 : r.y1 + 6, r.x0 + 6 : r.x1 + 6])


def test_read_window_fast_path_and_resampled_array_over_a_level():
    image = _image((60, 45, 3), seed=2)
    reader = CountingReader(image)
    level = _level(reader)
    window = Region(-5, 30, 20, 52)
    with CountComputes() as counter:
        fast = read_window(level, window)
        resampled = ResampledArray(level, 1.7)[5:20, 3:18]
    assert counter.count == 0 and len(reader.calls) == 2
    np.testing.assert_array_equal(fast, read_window(image, window))
    np.testing.assert_array_equal(resampled, ResampledArray(image, 1.7)[5:20, 3:18])


# --- real files: the slide readers name their readers --------------------------------------


@pytest.fixture(scope="module")
def synthetic_slide(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("direct")
    return write_synthetic_slide(folder / "slide.tif", size=(1000, 1300), tile=128, levels=2)


def _slide_levels(path: Path, backend: str = "auto") -> list[da.Array]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a file without MPP warns
        return read_slide(path, min_level_size=256, backend=backend).levels


def _through_dask(level: da.Array) -> da.Array:
    """The same pixels as a dask array that names no direct reader."""
    return level.map_blocks(np.asarray, dtype=level.dtype)


def _assert_fast_equals_dask(level: da.Array, grid: TileGrid, tiles) -> None:
    assert direct_reader(level) is not None
    plain = _through_dask(level)
    assert direct_reader(plain) is None
    slow = read_patches(plain, tiles)
    with CountComputes() as counter:
        fast = read_patches(level, tiles)
    assert counter.count == 0
    for a, b in zip(fast, slow, strict=True):
        assert a.shape == (*grid.patch_size, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


def _border_and_inner_tiles(shape: tuple[int, ...]) -> tuple[TileGrid, list]:
    grid = TileGrid(shape[:2], 256, halo=32)
    rows, cols = grid.n_tiles
    keys = {(0, 0), (rows - 1, cols - 1), (0, cols - 1), (rows // 2, cols // 2)}
    return grid, [grid.tile(r, c) for r, c in sorted(keys)]


def test_tifffile_levels_fast_path_equals_dask(synthetic_slide):
    levels = _slide_levels(synthetic_slide)
    assert len(levels) >= 3  # two stored, then computed ones (HalvedLevel)
    for level in levels:
        grid, tiles = _border_and_inner_tiles(level.shape)
        _assert_fast_equals_dask(level, grid, tiles)


def test_resampled_slide_level_reads_without_dask(synthetic_slide):
    level = _slide_levels(synthetic_slide)[0]
    fast, slow = ResampledArray(level, 2.3), ResampledArray(_through_dask(level), 2.3)
    _, tiles = _border_and_inner_tiles(fast.shape)
    with CountComputes() as counter:
        patches = read_patches(fast, tiles)
    assert counter.count == 0
    for a, b in zip(patches, read_patches(slow, tiles), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("tcga-cr-7395-01a-01-ts1.svs", "openslide"),  # JPEG 2000 tiles: openslide's
        ("cmu-1-small-region.svs", "tifffile"),
        ("cmu-1-small-region.svs", "openslide"),
    ],
)
def test_real_svs_fast_path_equals_dask(shared_data, name, backend):
    path = shared_data / "wsi" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    for level in _slide_levels(path, backend)[:2]:
        grid, tiles = _border_and_inner_tiles(level.shape)
        _assert_fast_equals_dask(level, grid, tiles)
