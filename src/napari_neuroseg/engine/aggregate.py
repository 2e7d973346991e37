"""Aggregators: where tile outputs are summed, weighted, and normalised at the end.

An aggregator has a two-method contract: ``aggregate(values, location, weights=None)`` adds
one tile's ``(K, *window)`` values (times ``weights``) at ``location`` (the window's first
pixel, in the same coordinates as ``origin``), clipping to the aggregator's extent;
``finalize()`` divides by the summed weights and returns the ``(K, *shape)`` result. Pixels no
tile reached are 0; :attr:`covered` tells them apart after ``finalize``.

:class:`MemoryAggregator` keeps numpy arrays; :class:`ZarrAggregator` keeps zarr arrays on
disk, touching only the chunks tiles fall into, for outputs larger than memory.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.engine.errors import EngineError


class Aggregator(Protocol):
    """What the engine needs from an aggregator."""

    def aggregate(
        self, values: np.ndarray, location: Sequence[int], weights: np.ndarray | None = None
    ) -> None:
        """Add one tile's values at ``location``."""

    def finalize(self) -> Any:
        """Normalise and return the ``(K, *shape)`` result."""


def _clip(
    location: Sequence[int], size: Sequence[int], origin: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """(target slices, source slices) of a window clipped to ``origin + shape``; None if apart."""
    dst, src = [], []
    for loc, n, o, s in zip(location, size, origin, shape, strict=True):
        lo, hi = max(loc, o), min(loc + n, o + s)
        if hi <= lo:
            return None
        dst.append(slice(lo - o, hi - o))
        src.append(slice(lo - loc, hi - loc))
    return tuple(dst), tuple(src)


class _Base:
    def __init__(self, n_outputs: int, shape: Sequence[int], origin: Sequence[int] | None) -> None:
        if n_outputs < 1:
            raise EngineError(f"an aggregator needs at least one output, got {n_outputs}")
        self.n_outputs = int(n_outputs)
        self.shape = tuple(int(s) for s in shape)
        self.origin = tuple(int(o) for o in origin) if origin is not None else (0,) * len(shape)
        if len(self.origin) != len(self.shape) or min(self.shape) < 1:
            raise EngineError(f"bad aggregator extent: shape {self.shape}, origin {self.origin}")
        self._lock = threading.Lock()
        self._finalized = False

    def _prepare(
        self, values: np.ndarray, location: Sequence[int], weights: np.ndarray | None
    ) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
        if self._finalized:
            raise EngineError("this aggregator is finalized; create a new one")
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != len(self.shape) + 1 or values.shape[0] != self.n_outputs:
            raise EngineError(
                f"expected values of shape ({self.n_outputs}, <{len(self.shape)} sizes>), "
                f"got {values.shape}"
            )
        if weights is None:
            weights = np.ones(values.shape[1:], np.float32)
        elif weights.shape != values.shape[1:]:
            raise EngineError(f"weights {weights.shape} do not match values {values.shape}")
        clipped = _clip(location, values.shape[1:], self.origin, self.shape)
        if clipped is None:
            return None
        dst, src = clipped
        w = weights[src].astype(np.float32, copy=False)
        return dst, np.multiply(values[(slice(None), *src)], w, dtype=np.float32), w


class MemoryAggregator(_Base):
    """Aggregate into numpy arrays.

    Parameters
    ----------
    n_outputs : int
        Number of output channels K.
    shape : sequence of int
        Spatial shape of the output.
    origin : sequence of int, optional
        Coordinates of the output's first pixel (default zeros), e.g. the region's start.
    """

    def __init__(
        self, n_outputs: int, shape: Sequence[int], *, origin: Sequence[int] | None = None
    ) -> None:
        super().__init__(n_outputs, shape, origin)
        self._sum = np.zeros((self.n_outputs, *self.shape), np.float32)
        self._weight = np.zeros(self.shape, np.float32)

    def aggregate(
        self, values: np.ndarray, location: Sequence[int], weights: np.ndarray | None = None
    ) -> None:
        """Add ``values * weights`` (``weights`` default 1) with its first pixel at ``location``."""
        with self._lock:
            prepared = self._prepare(values, location, weights)
            if prepared is not None:
                dst, weighted, w = prepared
                self._sum[(slice(None), *dst)] += weighted
                self._weight[dst] += w

    def finalize(self) -> np.ndarray:
        """The weighted mean, ``(K, *shape)`` float32; 0 where no tile contributed."""
        with self._lock:
            if not self._finalized:
                np.divide(self._sum, self._weight, out=self._sum, where=self._weight > 0)
                self._finalized = True
            return self._sum

    @property
    def covered(self) -> np.ndarray:
        """Boolean ``shape`` mask of the pixels some tile contributed to."""
        return self._weight > 0


class ZarrAggregator(_Base):
    """Aggregate into a zarr group on disk, for outputs larger than memory.

    The group holds ``values`` (``(K, *shape)`` float32, the weighted mean after
    :meth:`finalize`) and ``weights`` (``shape`` float32). Running sums of recently touched
    chunks are kept in a write-back buffer of at most ``buffer_bytes`` (least recently used
    chunks are written out first), so neighbouring tiles do not each re-read and re-write the
    chunks they share. Chunks no tile reaches are never written.

    Parameters
    ----------
    path : str or Path
        Where to create the zarr group (a directory).
    n_outputs : int
        Number of output channels K.
    shape : sequence of int
        Spatial shape of the output.
    origin : sequence of int, optional
        Coordinates of the output's first pixel (default zeros).
    chunk : int
        Chunk edge along the last two axes (earlier spatial axes get chunk 1).
    buffer_bytes : int
        Memory for buffered chunks (sums and weights).
    overwrite : bool
        Replace an existing group at ``path``; otherwise an existing path is an error.
    """

    def __init__(
        self,
        path: str | Path,
        n_outputs: int,
        shape: Sequence[int],
        *,
        origin: Sequence[int] | None = None,
        chunk: int = 512,
        buffer_bytes: int = 256 * 2**20,
        overwrite: bool = False,
    ) -> None:
        super().__init__(n_outputs, shape, origin)
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise EngineError(f"{self.path} already exists; pass overwrite=True to replace it")
        chunks = tuple(1 for _ in self.shape[:-2]) + tuple(min(chunk, s) for s in self.shape[-2:])
        self._chunks = chunks
        group = zarr.open_group(str(self.path), mode="w")
        group.attrs["origin"] = list(self.origin)
        self._values = group.create_array(
            "values",
            shape=(self.n_outputs, *self.shape),
            chunks=(self.n_outputs, *chunks),
            dtype="float32",
            fill_value=0.0,
        )
        self._weights = group.create_array(
            "weights", shape=self.shape, chunks=chunks, dtype="float32", fill_value=0.0
        )
        self.buffer_bytes = int(buffer_bytes)
        self._buffer: OrderedDict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._touched: set[tuple[int, ...]] = set()

    def aggregate(
        self, values: np.ndarray, location: Sequence[int], weights: np.ndarray | None = None
    ) -> None:
        """Add ``values * weights`` (``weights`` default 1) with its first pixel at ``location``."""
        with self._lock:
            prepared = self._prepare(values, location, weights)
            if prepared is None:
                return
            dst, weighted, w = prepared
            for ids in self._chunk_ids(dst):
                bounds = self._chunk_slices(ids)
                inner = tuple(
                    slice(max(d.start, b.start), min(d.stop, b.stop))
                    for d, b in zip(dst, bounds, strict=True)
                )
                in_chunk = tuple(
                    slice(i.start - b.start, i.stop - b.start)
                    for i, b in zip(inner, bounds, strict=True)
                )
                in_tile = tuple(
                    slice(i.start - d.start, i.stop - d.start)
                    for i, d in zip(inner, dst, strict=True)
                )
                total, weight = self._block(ids)
                total[(slice(None), *in_chunk)] += weighted[(slice(None), *in_tile)]
                weight[in_chunk] += w[in_tile]
            self._evict(self.buffer_bytes)

    def _chunk_ids(self, dst: tuple[slice, ...]) -> list[tuple[int, ...]]:
        ranges = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(dst, self._chunks, strict=True)
        ]
        return list(itertools.product(*ranges))

    def _chunk_slices(self, ids: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(ids, self._chunks, self.shape, strict=True)
        )

    def _block(self, ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The buffered (sums, weights) of one chunk, loaded from disk if it was written out."""
        block = self._buffer.get(ids)
        if block is None:
            sl = self._chunk_slices(ids)
            if ids in self._touched:
                block = (self._values[(slice(None), *sl)], self._weights[sl])
            else:
                size = tuple(s.stop - s.start for s in sl)
                block = (np.zeros((self.n_outputs, *size), np.float32), np.zeros(size, np.float32))
                self._touched.add(ids)
            self._buffer[ids] = block
        self._buffer.move_to_end(ids)
        return block

    def _evict(self, budget: int) -> None:
        """Write least recently used chunks to disk until the buffer fits ``budget`` bytes."""
        nbytes = sum(t.nbytes + w.nbytes for t, w in self._buffer.values())
        while self._buffer and nbytes > budget:
            ids, (total, weight) = self._buffer.popitem(last=False)
            sl = self._chunk_slices(ids)
            self._values[(slice(None), *sl)] = total
            self._weights[sl] = weight
            nbytes -= total.nbytes + weight.nbytes

    def finalize(self) -> zarr.Array:
        """Normalise every touched chunk (buffered or on disk); return the ``values`` array."""
        with self._lock:
            if not self._finalized:
                for ids in sorted(self._touched):
                    sl = self._chunk_slices(ids)
                    block = self._buffer.pop(ids, None)
                    if block is None:
                        block = (self._values[(slice(None), *sl)], self._weights[sl])
                    else:
                        self._weights[sl] = block[1]
                    total, weight = block
                    np.divide(total, weight, out=total, where=weight > 0)
                    self._values[(slice(None), *sl)] = total
                self._finalized = True
            return self._values

    @property
    def covered(self) -> da.Array:
        """Lazy boolean ``shape`` mask of the pixels some tile contributed to."""
        return da.from_zarr(self._weights) > 0


def labels_from_probabilities(probabilities: Any, threshold: float | None = None) -> Any:
    """Label map from ``(K, ...)`` probabilities (numpy or dask; dask stays lazy).

    Parameters
    ----------
    probabilities : array-like
        Per-class maps, class axis first.
    threshold : float, optional
        K == 1: label 1 where the map is >= ``threshold`` (default 0.5). K == 2: when given,
        label 1 where class 1 is >= ``threshold`` instead of the argmax. Ignored for K > 2.

    Returns
    -------
    array-like
        uint8 labels (int32 when K > 255); 0 where every class is 0 (uncovered pixels).
    """
    k = probabilities.shape[0]
    if k == 1 or (k == 2 and threshold is not None):
        t = 0.5 if threshold is None else threshold
        return (probabilities[k - 1] >= t).astype(np.uint8)
    dtype = np.uint8 if k <= 255 else np.int32
    if isinstance(probabilities, np.ndarray):
        if k == 2:  # argmax of two maps: 1 where the second is strictly larger
            return np.greater(probabilities[1], probabilities[0]).view(np.uint8)
        return _argmax_classes(probabilities, dtype)
    return probabilities.argmax(axis=0).astype(dtype)


def _argmax_classes(probabilities: np.ndarray, dtype: type) -> np.ndarray:
    """``probabilities.argmax(axis=0)`` one class plane at a time (contiguous passes, several
    times faster than numpy's strided argmax over the first axis); ties go to the first
    class, as with argmax."""
    best = probabilities[0].copy()
    labels = np.zeros(best.shape, dtype)
    for k in range(1, probabilities.shape[0]):
        plane = probabilities[k]
        higher = plane > best
        labels[higher] = k
        np.maximum(best, plane, out=best)
    return labels
