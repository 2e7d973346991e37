"""Lazily computed pyramid levels for slides that have too few of them.

A slide stored at one resolution (or whose smallest stored level is still large) would make a
zoomed-out napari view decode the whole full-resolution image. :func:`extend_pyramid` appends
dask-lazy levels, each the 2x2 mean of the one before, until the long side is small enough.

Each computed level is a single dask layer over a :class:`HalvedLevel` array-like: computing
one of its chunks reads the covering region of the level above, block by block, and averages
it. Building the levels is O(1) whatever the slide size (a chain of ``rechunk`` and
``map_blocks`` would materialise one task per tile at open, about 1 s for a 50k x 50k slide,
and make every later compute cull that whole graph). Deep levels read the level above through
its ``HalvedLevel`` directly, so a chunk of level *k* costs one dask task plus the tile reads it
needs. Memory stays bounded because regions are processed in blocks of ``block`` pixels.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from napari_neuroseg.io._slide_common import wrap_reader
from napari_neuroseg.io.downsample import downsample

#: Largest output block (pixels per side) averaged at once; the source block is twice that.
DEFAULT_BLOCK = 1024


def extend_pyramid(
    levels: list[da.Array], min_level_size: int = 2048, *, source: Any = None
) -> list[da.Array]:
    """Append halved levels until the smallest level's long side is at most ``min_level_size``.

    Parameters
    ----------
    levels : list of dask.array.Array
        Existing levels, full resolution first; axes ``"yx"`` or ``"yxc"``. Not modified.
    min_level_size : int, optional
        Stop once the long side (y or x) of the last level is at most this many pixels.
    source : array-like, optional
        An object with ``shape``, ``dtype`` and ``__getitem__`` over slices that returns the
        same pixels as ``levels[-1]`` (for example the file reader behind it). Computed levels
        then read it directly instead of computing ``levels[-1]`` through dask, which saves
        dask's per-compute overhead.

    Returns
    -------
    list of dask.array.Array
        The input levels followed by the computed ones. Each computed level is the 2x2 block
        mean of the level before (rounded half up for integers, same dtype), trimmed to even
        size first, so it has ``floor(h / 2)`` x ``floor(w / 2)`` pixels. Its chunks have the
        size of the first chunk of ``levels[-1]`` (the file's tile size).

    Raises
    ------
    ValueError
        If ``levels`` is empty, ``min_level_size`` is smaller than 1, or ``source`` does not
        have the shape of ``levels[-1]``.
    """
    if not levels:
        raise ValueError("extend_pyramid needs at least one level")
    if min_level_size < 1:
        raise ValueError(f"min_level_size must be at least 1, got {min_level_size}")
    last = levels[-1]
    if source is not None and tuple(source.shape) != tuple(last.shape):
        raise ValueError(f"source shape {source.shape} differs from the last level {last.shape}")
    tile = (int(last.chunks[0][0]), int(last.chunks[1][0]))
    out = list(levels)
    reader: Any = last if source is None else source
    while max(out[-1].shape[:2]) > min_level_size and min(out[-1].shape[:2]) >= 2:
        reader = HalvedLevel(reader, tile)
        out.append(wrap_reader(reader, tile, f"{out[-1].name}-halved"))
    return out


class HalvedLevel:
    """Array-like whose pixels are the 2x2 means of ``source``, computed region by region.

    Parameters
    ----------
    source : dask.array.Array or array-like
        The level above: a dask array (read with the synchronous scheduler) or any object with
        ``shape``, ``dtype`` and slice ``__getitem__`` (read directly).
    tile : (int, int)
        Chunk size of the dask array built on this level; blocks are multiples of it, so
        source tiles are read once per block.
    block : int, optional
        Largest block of output pixels (per side) averaged at once.
    """

    def __init__(self, source: Any, tile: tuple[int, int], block: int = DEFAULT_BLOCK) -> None:
        self.source = source
        height, width = int(source.shape[0]), int(source.shape[1])
        self.shape = (height // 2, width // 2, *(int(s) for s in source.shape[2:]))
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)
        self._block = (max(1, block // tile[0]) * tile[0], max(1, block // tile[1]) * tile[1])

    def __getitem__(self, key: Any) -> np.ndarray:
        """Average the source region under ``key`` (unit-step slices along y and x)."""
        (y0, y1), (x0, x1), rest = _region(key, self.shape)
        out = np.empty((y1 - y0, x1 - x0, *self.shape[2:]), dtype=self.dtype)
        step_y, step_x = self._block
        for top in range(y0, y1, step_y):
            bottom = min(top + step_y, y1)
            for left in range(x0, x1, step_x):
                right = min(left + step_x, x1)
                block = self._read(slice(2 * top, 2 * bottom), slice(2 * left, 2 * right))
                out[top - y0 : bottom - y0, left - x0 : right - x0] = downsample(block)
        return out[(slice(None), slice(None), *rest)]

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        region = self.source[rows, cols]
        if isinstance(region, da.Array):
            return np.asarray(region.compute(scheduler="synchronous"))
        return np.asarray(region)


def _region(key: Any, shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int], tuple]:
    """``((y0, y1), (x0, x1), rest)`` of a key of unit-step slices along y and x."""
    key = key if isinstance(key, tuple) else (key,)
    key = key + (slice(None),) * (len(shape) - len(key))
    bounds = []
    for axis in (0, 1):
        if not isinstance(key[axis], slice):
            raise IndexError("computed pyramid levels can only be read with slices along y and x")
        start, stop, step = key[axis].indices(shape[axis])
        if step != 1:
            raise IndexError("computed pyramid levels can only be read with unit-step slices")
        bounds.append((start, max(start, stop)))
    return bounds[0], bounds[1], tuple(key[2:])
