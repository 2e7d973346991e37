"""A thread-safe queue of tile requests that a viewer can reprioritise and prune.

A viewer puts the tiles of what is on screen, tagged with the current *generation*. When the
view moves it calls :meth:`TileQueue.new_generation` (which drops every pending request of
older generations) and puts the new tiles; :meth:`TileQueue.set_focus` makes the tiles nearest
to a point (e.g. the screen centre) come out first. A worker thread runs :func:`run_worker`,
which pulls batches with :meth:`TileQueue.get_batch` until the queue is closed or it is told
to stop, and can check :meth:`TileQueue.is_current` before showing a result that took long;
:func:`iter_queue` is the same loop as a generator around a ``TileComputer``, dropping stale
results itself.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from napari_neuroseg.engine.compute import TileComputer, TileOutput, apply_activation
from napari_neuroseg.engine.tiling import Tile


class TileRequest(NamedTuple):
    """One pending tile, the generation it was requested in, and its arrival number."""

    tile: Tile
    generation: int
    seq: int


def _distance(tile: Tile, focus: tuple[float, float] | None) -> float:
    if focus is None:
        return 0.0
    cy, cx = tile.core.center
    return math.hypot(cy - focus[0], cx - focus[1])


class TileQueue:
    """Pending tile requests, nearest to the focus first (first come first at equal distance).

    A tile (by ``tile.key``) is pending at most once: putting it again only moves it to the
    newer generation. All methods may be called from any thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[tuple, TileRequest] = {}
        self._heap: list[tuple[float, int, tuple]] = []
        self._seq = itertools.count()
        self._generation = 0
        self._focus: tuple[float, float] | None = None
        self._closed = False
        self.cancelled = 0
        """Total number of requests dropped by :meth:`cancel` or :meth:`new_generation`."""

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def generation(self) -> int:
        """The current generation (starts at 0)."""
        with self._cond:
            return self._generation

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        with self._cond:
            return self._closed

    def put(self, tiles: Iterable[Tile], *, generation: int | None = None) -> int:
        """Queue tiles (in the current generation unless ``generation`` is given).

        Returns
        -------
        int
            Number of tiles that were not already pending.
        """
        added = 0
        with self._cond:
            if self._closed:
                raise RuntimeError("cannot put tiles into a closed TileQueue")
            gen = self._generation if generation is None else int(generation)
            for tile in tiles:
                old = self._pending.get(tile.key)
                if old is not None:
                    self._pending[tile.key] = old._replace(tile=tile, generation=gen)
                    continue
                seq = next(self._seq)
                self._pending[tile.key] = TileRequest(tile, gen, seq)
                heapq.heappush(self._heap, (_distance(tile, self._focus), seq, tile.key))
                added += 1
            self._cond.notify_all()
        return added

    def new_generation(self) -> int:
        """Start a new generation, cancelling every pending request of older ones.

        Returns
        -------
        int
            The new generation number.
        """
        with self._cond:
            self._generation += 1
            current = self._generation
            self._drop(lambda req: req.generation < current)
            return current

    def cancel(self, predicate: Callable[[Tile], bool]) -> int:
        """Drop the pending tiles for which ``predicate(tile)`` is true; return how many."""
        with self._cond:
            return self._drop(lambda req: predicate(req.tile))

    def is_current(self, request: TileRequest) -> bool:
        """Whether ``request`` belongs to the current generation (its result is still wanted)."""
        with self._cond:
            return request.generation == self._generation

    def set_focus(self, point: tuple[float, float] | None) -> None:
        """Serve tiles by distance of their core centre to ``point`` (y, x); None = FIFO."""
        with self._cond:
            self._focus = None if point is None else (float(point[0]), float(point[1]))
            self._rebuild()

    def get_batch(self, max_items: int, timeout: float | None = None) -> list[TileRequest]:
        """Remove and return up to ``max_items`` requests, best first.

        Blocks until at least one request is pending, the queue is closed (returns what is
        left, possibly nothing) or ``timeout`` seconds pass (returns ``[]``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._pending and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            batch: list[TileRequest] = []
            while self._heap and len(batch) < max_items:
                _, seq, key = heapq.heappop(self._heap)
                request = self._pending.get(key)
                if request is not None and request.seq == seq:
                    del self._pending[key]
                    batch.append(request)
            return batch

    def close(self) -> None:
        """No more puts; waiting workers wake up and drain what is pending."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _drop(self, doomed: Callable[[TileRequest], bool]) -> int:
        keys = [key for key, req in self._pending.items() if doomed(req)]
        for key in keys:
            del self._pending[key]
        self.cancelled += len(keys)
        if len(self._heap) > 2 * len(self._pending) + 64:
            self._rebuild()
        return len(keys)

    def _rebuild(self) -> None:
        self._heap = [
            (_distance(req.tile, self._focus), req.seq, key) for key, req in self._pending.items()
        ]
        heapq.heapify(self._heap)


def run_worker(
    queue: TileQueue,
    process: Callable[[list[TileRequest]], None],
    *,
    batch_size: int = 8,
    should_stop: Callable[[], bool] | None = None,
    poll_interval: float = 0.05,
) -> int:
    """Pull batches from ``queue`` and hand them to ``process`` until closed and empty or stopped.

    Parameters
    ----------
    queue : TileQueue
    process : callable
        Called with each non-empty batch of :class:`TileRequest`.
    batch_size : int
        Most requests per batch.
    should_stop : callable, optional
        Checked between batches (and every ``poll_interval`` seconds while idle).
    poll_interval : float
        How long one wait for requests lasts before ``should_stop`` is checked again.

    Returns
    -------
    int
        Number of requests processed.
    """
    done = 0
    while not (should_stop is not None and should_stop()):
        batch = queue.get_batch(batch_size, timeout=poll_interval)
        if batch:
            process(batch)
            done += len(batch)
        elif queue.closed and len(queue) == 0:
            break
    return done


def iter_queue(
    queue: TileQueue,
    computer: TileComputer,
    *,
    batch_size: int = 8,
    activation: str = "none",
    should_stop: Callable[[], bool] | None = None,
    poll_interval: float = 0.05,
) -> Iterator[tuple[TileRequest, TileOutput]]:
    """Serve a queue with a :class:`~napari_neuroseg.engine.compute.TileComputer`.

    The generator form of :func:`run_worker`, for a viewer's worker thread: it pulls batches,
    computes them and yields ``(request, output)`` for every tile whose generation is still
    current when its batch finishes (stale results are dropped, though a cache still keeps
    them). It ends when the queue is closed and empty, or when ``should_stop()`` is true.

    Parameters
    ----------
    queue : TileQueue
    computer : TileComputer
        Reads, predicts and caches tiles of one image with one predictor.
    batch_size : int
        Most tiles per predictor call.
    activation : {"none", "softmax", "sigmoid"}
        Applied to each output over its class axis.
    should_stop : callable, optional
        Checked between batches.
    poll_interval : float
        How long one wait for requests lasts before ``should_stop`` is checked again.
    """
    while not (should_stop is not None and should_stop()):
        batch = queue.get_batch(batch_size, timeout=poll_interval)
        if not batch:
            if queue.closed and len(queue) == 0:
                return
            continue
        outputs = computer.compute([req.tile for req in batch])
        for request, out in zip(batch, outputs, strict=True):
            if not queue.is_current(request):
                continue
            if out.values is not None and activation != "none":
                out = out._replace(values=apply_activation(out.values, activation))
            yield request, out
