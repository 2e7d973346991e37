"""Slide level arrays name their readers, and those readers are safe to share between threads."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_neuroseg.engine.tiling import TileGrid, read_patches
from napari_neuroseg.io._slide_common import DIRECT_READER_ATTR
from napari_neuroseg.io.slide import read_slide
from napari_neuroseg.samples.slide import write_synthetic_slide


def _read(path: Path, backend: str = "auto"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # files without MPP warn
        return read_slide(path, min_level_size=256, backend=backend)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("common")
    return write_synthetic_slide(folder / "slide.tif", size=(1200, 1500), tile=128, levels=2)


def test_every_level_names_its_reader(slide_path):
    image = _read(slide_path)
    assert image.metadata["computed_levels"] >= 1
    for level in image.levels:
        reader = getattr(level, DIRECT_READER_ATTR)
        assert tuple(reader.shape) == level.shape and reader.dtype == level.dtype
        np.testing.assert_array_equal(reader[100:164, 300:333], level[100:164, 300:333])
    assert not hasattr(image.levels[0][:10], DIRECT_READER_ATTR)


def _hammer(level, tiles, expected, rounds: int, errors: list, engine: bool) -> None:
    """Read ``tiles`` again and again, as the engine (direct) or napari (dask chunks) would."""
    try:
        for _ in range(rounds):
            if engine:
                got = read_patches(level, tiles)
            else:
                got = [np.asarray(level[t.read.slices]) for t in tiles]
            for a, b in zip(got, expected, strict=True):
                if not np.array_equal(a, b):
                    errors.append("wrong pixels")
                    return
    except Exception as exc:  # reported by the main thread
        errors.append(repr(exc))


def _assert_threads_agree(level) -> None:
    grid = TileGrid(level.shape[:2], 192, halo=0)
    rows, cols = grid.n_tiles
    tiles = [grid.tile(r, c) for r in range(rows - 1) for c in range(cols - 1)]
    expected = [np.asarray(level[t.read.slices]) for t in tiles]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_hammer, args=(level, tiles, expected, 4, errors, engine))
        for engine in (True, True, False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_tiff_reader_shared_by_engine_and_napari_threads(slide_path):
    # one TiffFile handle serves all threads: seek + read happen under its lock
    _assert_threads_agree(_read(slide_path).levels[0])


@pytest.mark.realdata
def test_openslide_reader_shared_by_engine_and_napari_threads(shared_data):
    path = shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    if not path.exists():
        pytest.skip(f"{path} not found")
    _assert_threads_agree(_read(path, "openslide").levels[1])


@pytest.mark.realdata
def test_openslide_fractional_level_pixels_do_not_depend_on_the_read(shared_data):
    path = shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    if not path.exists():
        pytest.skip(f"{path} not found")
    level = _read(path, "openslide").levels[1]  # downsample 2.0005
    reader = getattr(level, DIRECT_READER_ATTR)
    big = reader[1000:1400, 1500:1900]
    np.testing.assert_array_equal(reader[1001:1257, 1601:1857], big[1:257, 101:357])
    np.testing.assert_array_equal(big, level[1000:1400, 1500:1900].compute())
