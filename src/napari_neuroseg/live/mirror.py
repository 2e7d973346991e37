"""Recently written result chunks kept decoded in memory, for reads on the GUI thread.

napari reads the live result layers on the Qt main thread. Reading them from zarr there goes
through zarr's own event-loop thread, which is busy with the worker's writes (compressing
and storing tiles): the benchmark's stall sampler found the main thread waiting on it for
up to 300 ms. A :class:`ChunkMirror` keeps the chunks the worker wrote, decoded, in a
bounded LRU and remembers which chunks were ever written, so a read of the view assembles
its pixels from memory (and zeros for chunks never written) and touches zarr only for
written chunks that have since been evicted (views the user left long ago).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ChunkMirror"]

#: A chunk's key: (array name, level, chunk row, chunk column).
Key = tuple[str, int, int, int]


class ChunkMirror:
    """Decoded copies of written chunks (LRU, bounded in bytes) and the set of written chunks.

    Parameters
    ----------
    chunk : int
        Chunk edge (pixels) of every level's arrays.
    max_bytes : int
        Memory budget of the decoded copies; the least recently used are dropped beyond it.
    """

    def __init__(self, chunk: int, max_bytes: int = 128 * 2**20) -> None:
        self.chunk, self.max_bytes = int(chunk), int(max_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._chunks: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._written: set[Key] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._chunks)

    def chunk_keys(self, name: str, level: int, ys: slice, xs: slice) -> list[Key]:
        """Keys of the chunks that the pixel ranges ``ys``, ``xs`` (step 1) touch."""
        c = self.chunk
        return [(name, level, cy, cx)
                for cy in range(ys.start // c, -(-ys.stop // c))
                for cx in range(xs.start // c, -(-xs.stop // c))]

    def update(self, name: str, level: int, ys: slice, xs: slice, values: np.ndarray,
               extent: tuple[int, int], load: Callable[[slice, slice], np.ndarray]) -> None:
        """Copy ``values`` (``(..., h, w)``, just written at ``ys``, ``xs``) into the mirror.

        ``extent`` is the array's ``(height, width)``; ``load(ys, xs)`` reads stored pixels,
        for a chunk written before but no longer mirrored, before a partial update.
        """
        c = self.chunk
        for key in self.chunk_keys(name, level, ys, xs):
            _, _, cy, cx = key
            y0, x0 = cy * c, cx * c
            with self._lock:
                block = self._chunks.get(key)
                known = key in self._written
            new = block is None
            if new:  # built outside the lock (may read the store), filled in under it
                cys = slice(y0, min(y0 + c, extent[0]))
                cxs = slice(x0, min(x0 + c, extent[1]))
                block = (np.array(load(cys, cxs)) if known else np.zeros(
                    (*values.shape[:-2], cys.stop - y0, cxs.stop - x0), values.dtype))
            sy = slice(max(ys.start, y0), min(ys.stop, y0 + block.shape[-2]))
            sx = slice(max(xs.start, x0), min(xs.stop, x0 + block.shape[-1]))
            with self._lock:  # in place: a reader never finds a written chunk missing
                if sy.stop > sy.start and sx.stop > sx.start:
                    block[..., sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = \
                        values[..., sy.start - ys.start:sy.stop - ys.start,
                               sx.start - xs.start:sx.stop - xs.start]
                self._written.add(key)
                if new:
                    self._chunks[key] = block
                    self.nbytes += block.nbytes
                    self._evict()
                else:
                    self._chunks.move_to_end(key)

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes and len(self._chunks) > 1:
            _, old = self._chunks.popitem(last=False)
            self.nbytes -= old.nbytes

    def read(self, name: str, level: int, ys: slice, xs: slice, pick: int | None,
             fallback: Callable[[slice, slice], np.ndarray], lead: tuple[int, ...] = (),
             dtype: Any = np.uint8) -> np.ndarray:
        """Pixels ``ys``, ``xs`` (step 1, inside the array) of one array of the mirror.

        Parameters
        ----------
        name, level : str, int
            Which array.
        ys, xs : slice
            Pixel ranges with ``0 <= start <= stop <= extent``.
        pick : int, optional
            Take this index of the chunks' first axis (one class of ``(K, h, w)`` chunks).
        fallback : callable
            ``fallback(ys, xs)`` reads a written chunk's part that is no longer mirrored.
        lead, dtype
            Leading shape (after ``pick``) and dtype of the result.

        Returns
        -------
        numpy.ndarray
            Mirrored chunks copied, never-written chunks zeros, the rest from ``fallback``.
        """
        out = np.zeros((*lead, ys.stop - ys.start, xs.stop - xs.start), dtype)
        c = self.chunk
        for key in self.chunk_keys(name, level, ys, xs):
            _, _, cy, cx = key
            sy = slice(max(ys.start, cy * c), min(ys.stop, (cy + 1) * c))
            sx = slice(max(xs.start, cx * c), min(xs.stop, (cx + 1) * c))
            dst = (..., slice(sy.start - ys.start, sy.stop - ys.start),
                   slice(sx.start - xs.start, sx.stop - xs.start))
            with self._lock:
                block = self._chunks.get(key)
                if block is not None:
                    self._chunks.move_to_end(key)
                    self.hits += 1
                    src = block if pick is None else block[pick]
                    out[dst] = src[..., sy.start - cy * c:sy.stop - cy * c,
                                   sx.start - cx * c:sx.stop - cx * c]
                    continue
                written = key in self._written
            if written:
                self.misses += 1
                out[dst] = fallback(sy, sx)
        return out
