"""Pieces shared by the slide backends (tifffile and openslide)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dask.array as da
import numpy as np
from dask.base import tokenize

#: Pixel sizes outside this range (um/px) are not believable for a slide: a TIFF written by an
#: ordinary image program often says 72 dpi (353 um/px), which is a default, not a measurement.
PLAUSIBLE_MPP = (0.01, 50.0)
#: Attribute naming the reader behind a level's dask array, for consumers that read tiles
#: without dask (the tile engine's ``engine.direct.DIRECT_READER_ATTR`` spells the same name).
DIRECT_READER_ATTR = "neuroseg_direct_reader"


class RegionReader(Protocol):
    """An array-like over one pyramid level that reads only the requested region."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    ndim: int

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray: ...


@dataclass
class OpenedSlide:
    """What a backend found in a slide file, before computed levels and the MPP policy.

    ``readers`` are the region readers behind ``levels`` (same pixels, read without dask).
    """

    levels: list[da.Array]
    readers: list[Any]
    backend: str
    vendor: str
    format: str
    tile_size: tuple[int, int]
    mpp: tuple[float, float] | None = None
    mpp_source: str | None = None
    objective_power: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def level_array(reader: RegionReader, chunks: tuple[int, int], key: tuple[Any, ...]) -> da.Array:
    """Wrap a region reader as a dask array chunked ``chunks`` (y, x) with all channels per chunk.

    ``key`` identifies the content (file, size, mtime, backend, level) so that two opens of an
    unchanged file share dask task names (and napari's chunk cache).
    """
    return wrap_reader(reader, chunks, "neuroseg-slide-" + tokenize(*key))


def wrap_reader(reader: Any, chunks: tuple[int, int], name: str) -> da.Array:
    """A dask array over ``reader`` (``shape``, ``dtype``, ``__getitem__`` with slices).

    Chunks are ``chunks`` along y and x (clamped to the shape) and whole along any further
    axes; the graph is inlined so that reading one chunk does not walk the whole level.
    The array names ``reader`` in its ``DIRECT_READER_ATTR`` attribute, so that the tile
    engine reads tiles from it without dask's per-compute cost; ``reader`` must therefore
    be safe to call from several threads at once (napari's and the engine's).
    """
    full = (min(chunks[0], reader.shape[0]), min(chunks[1], reader.shape[1]), *reader.shape[2:])
    array = da.from_array(
        reader,
        chunks=full,
        name=name,
        asarray=False,
        fancy=False,
        lock=False,
        inline_array=True,
        meta=np.empty((0,) * len(reader.shape), dtype=reader.dtype),
    )
    setattr(array, DIRECT_READER_ATTR, reader)
    return array


def file_key(path: Path) -> tuple[str, int, int]:
    """Absolute path, size and modification time: enough to tell file contents apart."""
    stat = os.stat(path)
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def plausible_mpp(value: float | None) -> bool:
    """Whether ``value`` (um/px) is a finite pixel size a slide scanner could produce."""
    if value is None or not math.isfinite(value):
        return False
    return PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]


def slice_bounds(key: Any, shape: tuple[int, ...]) -> tuple[int, int, int, int, slice]:
    """Turn a ``(y-slice, x-slice[, c-index])`` key into ``(y0, y1, x0, x1, channel key)``.

    Only unit-step slices are supported along y and x (dask's ``from_array`` getter only asks
    for those); the channel key is returned untouched for the caller to apply.
    """
    if not isinstance(key, tuple):
        key = (key,)
    key = key + (slice(None),) * (3 - len(key))
    ys, xs, cs = key[0], key[1], key[2]
    if not (isinstance(ys, slice) and isinstance(xs, slice)):
        raise IndexError("slide levels can only be read with slices along y and x")
    y0, y1, ystep = ys.indices(shape[0])
    x0, x1, xstep = xs.indices(shape[1])
    if ystep != 1 or xstep != 1:
        raise IndexError("slide levels can only be read with unit-step slices")
    return y0, max(y0, y1), x0, max(x0, x1), cs
