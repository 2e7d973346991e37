"""Tile-sparse results of a live session: per-class probabilities and labels, with a pyramid.

A :class:`ResultStore` holds what has been computed so far on a model's working grid, in zarr
arrays (in a temporary directory by default): chunks nobody wrote are never stored and read
as 0, so a 100k x 100k slide costs only what was looked at. Every write also updates the
downsampled levels above it (block means of the probabilities, the top-left label of each
2 x 2 block), and the levels are exposed as lazy dask lists that napari shows as multiscale
layers. zarr replaces chunk files atomically, so a reader never sees a chunk half-written
(only, for a moment, some chunks of a region newer than others).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.engine import Region
from napari_neuroseg.engine.levels import pyramid_shapes
from napari_neuroseg.live.mirror import ChunkMirror

__all__ = ["LevelView", "ResultStore"]

DTYPES = ("uint8", "float16", "float32")


class LevelView:
    """A numpy-like, lazy view of one stored level, sliced without dask.

    napari slices layer data on the GUI thread. Plain slices are served by the store's
    :class:`~napari_neuroseg.live.mirror.ChunkMirror` (decoded recent chunks, zeros where
    nothing was written), so the GUI thread does not wait on zarr while the worker writes;
    any other index reads zarr directly.

    Parameters
    ----------
    store : ResultStore
        The store the level belongs to.
    name : {"probabilities", "labels"}
        Which pyramid.
    level : int
        Which level.
    index : int, optional
        Take this index of the first axis (one class of the probabilities).
    divide : float, optional
        Return float32 values divided by this (255 for uint8 probabilities).
    """

    def __init__(self, store: ResultStore, name: str, level: int, index: int | None = None,
                 divide: float | None = None) -> None:
        self._store, self._name, self._level = store, name, level
        self._array = store.array(name, level)
        self._index, self._divide = index, divide
        array = self._array
        self.shape = tuple(array.shape[1:] if index is not None else array.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32) if divide is not None else np.dtype(array.dtype)
        self.size = int(np.prod(self.shape))

    @property
    def store(self) -> ResultStore:
        """The store this view reads."""
        return self._store

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        plain = _plain_slices(key, self.shape)
        if plain is not None and (self._index is not None or self._name == "labels"):
            data = self._store.read_level(self._name, self._level, *plain, pick=self._index)
        else:
            full = key if self._index is None else (self._index, *key)
            data = np.asarray(self._array[full])
        if self._divide is not None:
            data = data.astype(np.float32) / np.float32(self._divide)
        return data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)


def _plain_slices(key: tuple, shape: tuple[int, ...]) -> tuple[slice, slice] | None:
    """``key`` as two step-1 ``(ys, xs)`` slices of a 2-D ``shape``, or None if it is not."""
    if len(shape) != 2:
        return None
    if key == (Ellipsis,):
        key = ()
    if len(key) > 2 or not all(isinstance(k, slice) for k in key):
        return None
    key = (*key, *[slice(None)] * (2 - len(key)))
    out = []
    for k, n in zip(key, shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            return None
        out.append(slice(start, max(start, stop)))
    return out[0], out[1]


class ResultStore:
    """Probabilities and labels on a working grid, written region by region.

    Parameters
    ----------
    shape : (int, int)
        (height, width) of the working grid (the model's pixels).
    n_classes : int
        K, the number of probability maps.
    scale, translate : (float, float)
        napari geometry of working pixel (0, 0) in world units (``SlidePlan.scale`` and
        ``SlidePlan.translate``).
    chunk : int
        Chunk edge of every level (the engine's tile stride makes level 0 writes whole chunks).
    dtype : {"uint8", "float16", "float32"}
        How probabilities are kept: ``uint8`` stores ``round(p * 255)`` (1/510 error).
    directory : str or Path, optional
        Where the zarr group goes; a temporary directory (deleted by :meth:`close`) when None.
    min_side : int
        Levels are halved until the longest side is at most ``max(min_side, chunk)``
        (at least two levels:
        :func:`~napari_neuroseg.engine.levels.pyramid_shapes`).
    mirror_bytes : int
        Memory for decoded copies of recently written chunks (what napari reads on the GUI
        thread; :class:`~napari_neuroseg.live.mirror.ChunkMirror`).
    """

    def __init__(
        self,
        shape: Sequence[int],
        n_classes: int,
        *,
        scale: Sequence[float] = (1.0, 1.0),
        translate: Sequence[float] = (0.0, 0.0),
        chunk: int = 256,
        dtype: str = "uint8",
        directory: str | Path | None = None,
        min_side: int = 512,
        mirror_bytes: int = 128 * 2**20,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if n_classes < 1 or min(shape) < 1:
            raise ValueError(f"bad store extent: {n_classes} classes on a {tuple(shape)} grid")
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_classes = int(n_classes)
        self.scale = (float(scale[0]), float(scale[1]))
        self.translate = (float(translate[0]), float(translate[1]))
        self.chunk = int(chunk)
        self.dtype = np.dtype(dtype)
        self._owns_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="neuroseg-live-") if directory is None
                              else directory)
        # a temporary store goes with the object or, at the latest, when Python exits (napari
        # quitting while a worker still holds the store never calls close())
        self._cleanup = (weakref.finalize(self, shutil.rmtree, str(self.directory), True)
                         if self._owns_directory else None)
        self.lock = threading.RLock()
        self.level_shapes = pyramid_shapes(self.shape, self.chunk, min_side)
        group = zarr.open_group(str(self.directory / "results.zarr"), mode="w")
        self._probs: list[zarr.Array] = []
        self._labels: list[zarr.Array] = []
        for i, (h, w) in enumerate(self.level_shapes):
            ch = (min(self.chunk, h), min(self.chunk, w))
            self._probs.append(group.create_array(
                f"probabilities/{i}", shape=(self.n_classes, h, w), chunks=(1, *ch),
                dtype=self.dtype, fill_value=0))
            self._labels.append(group.create_array(
                f"labels/{i}", shape=(h, w), chunks=ch, dtype="uint8", fill_value=0))
        self.mirror = ChunkMirror(self.chunk, mirror_bytes)
        self.writes = 0
        self._closed = False

    # -- geometry ---------------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_shapes)

    def level_geometry(self, level: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari ``(scale, translate)`` of ``level`` on its own (a pixel = a 2^level block).

        A level-``i`` pixel covers a ``2^i`` block of working pixels, so its centre sits
        ``(2^i - 1) / 2`` working pixels past the block's first pixel: the placement napari
        gives level ``i`` of a multiscale layer with the level-0 geometry.
        """
        f = 2**level
        scale = (self.scale[0] * f, self.scale[1] * f)
        translate = tuple(t + s * (f - 1) / 2 for t, s in zip(self.translate, self.scale,
                                                               strict=True))
        return scale, (translate[0], translate[1])

    # -- writing ----------------------------------------------------------------------------
    def write(self, region: Region, probabilities: np.ndarray, labels: np.ndarray,
              update_pyramid: bool = True) -> None:
        """Store one region's results (working pixels) and update the levels above it.

        Parameters
        ----------
        region : Region
            Where, on the working grid (clipped to the grid).
        probabilities : numpy.ndarray
            ``(K, h, w)`` float in [0, 1].
        labels : numpy.ndarray
            ``(h, w)`` integer labels (< 256).
        update_pyramid : bool
            False leaves the coarser levels to one :meth:`update_pyramid` call over several
            writes (cheaper than one per tile).
        """
        if self._closed:
            raise RuntimeError("this ResultStore is closed")
        probabilities = np.asarray(probabilities)
        if probabilities.shape != (self.n_classes, *region.shape):
            raise ValueError(f"probabilities of shape {probabilities.shape} do not fit "
                             f"{self.n_classes} classes over {region}")
        h, w = self.shape
        clip = Region(region.y0, region.x0, min(region.y1, h), min(region.x1, w))
        if clip.y1 <= clip.y0 or clip.x1 <= clip.x0:
            return
        sl = (slice(0, clip.y1 - clip.y0), slice(0, clip.x1 - clip.x0))
        probs = self._encode(probabilities[(slice(None), *sl)])
        labels = np.asarray(labels)[sl].astype(np.uint8)
        with self.lock:
            self._probs[0][(slice(None), *clip.slices)] = probs
            self._labels[0][clip.slices] = labels
        self._mirror_write(0, clip, probs, labels)
        self.writes += 1
        if update_pyramid:
            self.update_pyramid(clip)

    def update_pyramid(self, region: Region) -> None:
        """Recompute every coarser level over ``region`` (working pixels) from level 0."""
        for level in range(1, self.n_levels):
            region = self._downsample(level, region)

    def _encode(self, probabilities: np.ndarray) -> np.ndarray:
        if self.dtype == np.uint8:
            return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)
        return probabilities.astype(self.dtype)

    def _downsample(self, level: int, below: Region) -> Region:
        """Recompute the part of ``level`` over ``below`` (pixels of ``level - 1``)."""
        src_p, src_l = self._probs[level - 1], self._labels[level - 1]
        y0, x0 = below.y0 // 2 * 2, below.x0 // 2 * 2
        y1, x1 = -(-below.y1 // 2) * 2, -(-below.x1 // 2) * 2
        ys, xs = slice(y0, y1), slice(x0, x1)  # the level below, from memory where it can
        probs = self.mirror.read("probabilities", level - 1, ys, xs, None,
                                 lambda a, b: np.asarray(src_p[:, a, b]),
                                 lead=(self.n_classes,), dtype=src_p.dtype)
        labels = self.mirror.read("labels", level - 1, ys, xs, None,
                                  lambda a, b: np.asarray(src_l[a, b]), dtype=src_l.dtype)[::2, ::2]
        k, hh, ww = probs.shape
        mean = probs.astype(np.float32).reshape(k, hh // 2, 2, ww // 2, 2).mean(axis=(2, 4))
        if self.dtype == np.uint8:
            mean = np.rint(mean)
        out = Region(y0 // 2, x0 // 2, y1 // 2, x1 // 2)
        mean = mean.astype(self.dtype)
        with self.lock:
            self._probs[level][(slice(None), *out.slices)] = mean
            self._labels[level][out.slices] = labels
        self._mirror_write(level, out, mean, labels)
        return out

    def _mirror_write(self, level: int, region: Region, probs: np.ndarray,
                      labels: np.ndarray) -> None:
        ys, xs = region.slices
        extent = self.level_shapes[level]
        for name, values in (("probabilities", probs), ("labels", labels)):
            array = self.array(name, level)
            self.mirror.update(name, level, ys, xs, values, extent,
                               lambda a, b, array=array: array[..., a, b])

    def array(self, name: str, level: int) -> zarr.Array:
        """The stored zarr array of pyramid ``name`` (probabilities / labels) at ``level``."""
        return (self._probs if name == "probabilities" else self._labels)[level]

    def read_level(self, name: str, level: int, ys: slice, xs: slice,
                   pick: int | None = None) -> np.ndarray:
        """Stored pixels ``ys``, ``xs`` of a level, from the in-memory mirror where it can.

        Parameters
        ----------
        name : {"probabilities", "labels"}
        level : int
        ys, xs : slice
            Step-1 pixel ranges inside the level.
        pick : int, optional
            One class of the probabilities (required for them: the mirror serves planes).

        Returns
        -------
        numpy.ndarray
            ``(h, w)`` in the stored dtype.
        """
        array = self.array(name, level)
        if name == "probabilities" and pick is None:
            raise ValueError("read_level reads one class of the probabilities: give pick")
        lead = (pick,) if pick is not None else ()
        return self.mirror.read(name, level, ys, xs, pick,
                                lambda a, b: np.asarray(array[(*lead, a, b)]),
                                dtype=array.dtype)

    # -- reading ----------------------------------------------------------------------------
    def _lazy(self, array: zarr.Array) -> da.Array:
        return da.from_array(array, chunks=array.chunks, lock=False, asarray=True,
                             inline_array=True)

    def labels_levels(self) -> list[da.Array]:
        """The label pyramid: lazy ``(h, w)`` uint8 arrays, finest first."""
        return [self._lazy(a) for a in self._labels]

    def probability_levels(self) -> list[da.Array]:
        """The probability pyramid as stored: lazy ``(K, h, w)`` arrays, finest first."""
        return [self._lazy(a) for a in self._probs]

    def heatmap_levels(self, class_index: int) -> list[da.Array]:
        """One class's probability pyramid as lazy float32 arrays in [0, 1]."""
        if not 0 <= class_index < self.n_classes:
            raise ValueError(f"class {class_index} is not in 0..{self.n_classes - 1}")
        levels = []
        for level in self.probability_levels():
            plane = level[class_index]
            levels.append(plane.astype(np.float32) / 255.0 if self.dtype == np.uint8
                          else plane.astype(np.float32))
        return levels

    def labels_views(self) -> list[LevelView]:
        """The label pyramid as :class:`LevelView` s (for napari layers)."""
        return [LevelView(self, "labels", i) for i in range(self.n_levels)]

    def heatmap_views(self, class_index: int) -> list[LevelView]:
        """One class's probability pyramid as float32 :class:`LevelView` s in [0, 1]."""
        if not 0 <= class_index < self.n_classes:
            raise ValueError(f"class {class_index} is not in 0..{self.n_classes - 1}")
        divide = 255.0 if self.dtype == np.uint8 else 1.0
        return [LevelView(self, "probabilities", i, class_index, divide)
                for i in range(self.n_levels)]

    def read(self, region: Region) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 ``(probabilities as float32 in [0, 1], labels)`` of ``region``."""
        probs = self._probs[0][(slice(None), *region.slices)]
        labels = self._labels[0][region.slices]
        probs = probs.astype(np.float32)
        return (probs / 255.0 if self.dtype == np.uint8 else probs), labels

    @property
    def nbytes_stored(self) -> int:
        """Bytes of chunk files on disk (what was written, compressed)."""
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Delete the temporary directory (a given ``directory`` is kept)."""
        self._closed = True
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
