"""A live analysis session: the tiles of what is on screen, computed in a worker, nearest first.

:class:`LiveSession` ties one slide plan and one predictor to a :class:`TileQueue`, a
:class:`TileCache` and a :class:`ResultStore`. The GUI thread calls :meth:`LiveSession.request`
with the visible world box whenever the view settles; that maps the box to working-level
tiles, skips the ones already in the store, cancels what the previous view asked for and
queues the rest nearest to the centre first. A worker thread iterates
:meth:`LiveSession.serve`, which computes batches, writes each finished tile core into the
store and yields a :class:`~napari_neuroseg.live.update.LiveUpdate` the GUI uses to refresh
its layers.

With ``preview`` on, a request whose view needs more than ``preview_min_tiles`` cores first
queues a coarse pass (:class:`~napari_neuroseg.live.preview.CoarsePass`: the model on a
coarser grid, a few tiles for the whole view), served before any working tile; its values
are written only into cores of the current request that are still pending, so they never
overwrite a refined core, and the refined cores replace them one by one.

A tile's core is final once every tile whose window overlaps it is known (only the tile
itself when the model's windows do not overlap); cores are blended from those outputs exactly
as :func:`napari_neuroseg.analysis.predict_slide` stitches them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from napari_neuroseg.analysis import SlidePlan
from napari_neuroseg.engine import (
    MemoryAggregator,
    OutputMode,
    Region,
    Tile,
    TileCache,
    TileComputer,
    TileOutput,
    TileQueue,
    labels_from_probabilities,
)
from napari_neuroseg.engine.stitch import contribution
from napari_neuroseg.live.preview import CoarseGrid, CoarsePass
from napari_neuroseg.live.store import ResultStore
from napari_neuroseg.live.update import LiveUpdate, ViewTooLarge
from napari_neuroseg.live.viewport import Box, box_to_pixels

__all__ = ["LiveSession"]

Key = tuple[int | None, int, int]


def _bounding(regions: list[Region]) -> Region | None:
    if not regions:
        return None
    return Region(min(r.y0 for r in regions), min(r.x0 for r in regions),
                  max(r.y1 for r in regions), max(r.x1 for r in regions))


class LiveSession:
    """Live, viewport-driven inference of one model over one slide.

    Parameters
    ----------
    plan : SlidePlan
        From :func:`napari_neuroseg.analysis.plan_slide` (level, preprocessing, tissue filter).
    predictor : callable
        Float32 NCHW batches to probabilities (a :class:`ModelRunner`).
    model_key : str
        Identifies the weights in the tile cache.
    cache : TileCache, optional
        Shared across sessions (keyed by model and preprocessing); a private 128 MiB cache
        when None.
    store : ResultStore, optional
        Where results go; a new one in a temporary directory when None.
    batch_size : int
        Tiles per predictor call.
    max_tiles : int
        Most tile cores one :meth:`request` may queue (:class:`ViewTooLarge` beyond).
    margin_tiles : int
        Whole tiles added around the requested box.
    preview : bool
        Paint a coarse pass over the view before its working tiles (dense models only; may
        be switched at any time, it applies from the next request).
    preview_min_tiles : int
        A view needing at most this many cores gets no coarse pass (its tiles come about as
        fast); None: ``batch_size``.
    preview_tiles : int
        Most coarse tiles of one view (the coarsening factor grows until they fit).
    """

    def __init__(self, plan: SlidePlan, predictor: Callable[[np.ndarray], Any], model_key: str,
                 cache: TileCache | None = None, store: ResultStore | None = None,
                 batch_size: int = 8, max_tiles: int = 600, margin_tiles: int = 0,
                 preview: bool = False, preview_min_tiles: int | None = None,
                 preview_tiles: int = 4) -> None:
        self.plan = plan
        self.predictor = predictor
        self.model_key = model_key
        self.max_tiles = int(max_tiles)
        self.margin_tiles = int(margin_tiles)
        self.options = plan.engine_options(batch_size=int(batch_size))
        """The engine options, as :func:`~napari_neuroseg.analysis.predict_slide` uses them."""
        self.grid = self.options.grid(plan.working_shape)
        self.cache = cache if cache is not None else TileCache(max_bytes=128 * 2**20)
        self.computer = TileComputer(plan.array, predictor, self.grid, self.options.mode.value,
                                     self.options.preprocess, self.options.tile_filter,
                                     self.cache, plan.cache_key(model_key))
        stride = self.grid.stride[0]
        self.n_outputs = int(getattr(predictor, "output_channels", 0) or plan.spec.n_classes)
        self.store = store if store is not None else ResultStore(
            plan.working_shape, self.n_outputs, scale=plan.scale, translate=plan.translate,
            chunk=stride * max(1, round(256 / stride)))
        self.queue = TileQueue()
        self._lock = threading.Lock()
        self._done: set[Key] = set()
        self._pending: dict[Key, Tile] = {}
        self._requested = 0
        self._ready: list[Tile] = []
        self._weights: dict[tuple[int, int], np.ndarray] = {}
        self.preview = bool(preview)
        self.preview_min_tiles = self.options.batch_size if preview_min_tiles is None \
            else int(preview_min_tiles)
        self.coarse = CoarsePass(plan, predictor, model_key, self.cache, preview_tiles)
        self._coarse: tuple[int, CoarseGrid, list[Tile]] | None = None  # (generation, ...)
        self.previewed: set[Key] = set()
        """Cores that show coarse values now (refined ones leave the set)."""

    # -- GUI side -----------------------------------------------------------------------------
    def working_region(self, box: Box) -> Region | None:
        """The working-level pixels under a world box (None when it misses the slide)."""
        return box_to_pixels(box, self.plan.scale, self.plan.translate, self.plan.working_shape)

    def count_tiles(self, box: Box) -> int:
        """How many tile cores cover ``box`` (cheap: no tile is built)."""
        region = self.working_region(box)
        if region is None:
            return 0
        sy, sx = self.grid.stride
        m = 2 * self.margin_tiles
        rows = (region.y1 - 1) // sy - region.y0 // sy + 1 + m
        cols = (region.x1 - 1) // sx - region.x0 // sx + 1 + m
        return rows * cols

    def request(self, box: Box) -> int:
        """Ask for the tiles under ``box`` (world units), cancelling the previous request.

        Returns
        -------
        int
            Number of tile cores queued (0 when everything there is already computed).

        Raises
        ------
        ViewTooLarge
            When more than ``max_tiles`` cores cover the box (the previous request is
            cancelled all the same).
        """
        n = self.count_tiles(box)
        if n > self.max_tiles:
            self._start([], None)
            raise ViewTooLarge(f"{n} tiles are visible; live mode computes at most "
                               f"{self.max_tiles}: zoom in, or analyse the whole image")
        region = self.working_region(box)
        if region is None:
            return self._start([], None)
        sy, sx = self.grid.stride
        h, w = self.plan.working_shape
        m = self.margin_tiles
        region = Region(max(0, region.y0 - m * sy), max(0, region.x0 - m * sx),
                        min(h, region.y1 + m * sy), min(w, region.x1 + m * sx))
        cores = self.grid.tiles_in(region, blended=False)
        return self._start(cores, region.center)

    def request_all(self) -> int:
        """Ask for every tile of the slide (tissue-only when the plan filters tiles)."""
        h, w = self.plan.working_shape
        cores = self.grid.tiles_in(Region(0, 0, h, w), blended=False)
        return self._start(cores, None)

    def cancel(self) -> None:
        """Drop everything pending (a new, empty request)."""
        self._start([], None)

    def _start(self, cores: list[Tile], focus: tuple[float, float] | None) -> int:
        with self._lock:
            cores = [t for t in cores if t.key not in self._done]
            self.queue.new_generation()
            self._pending = {t.key: t for t in cores}
            self._requested = len(cores)
            needed: dict[Key, Tile] = {}
            for core in cores:
                for tile in self._contributors(core):
                    needed.setdefault(tile.key, tile)
            generation = self.queue.generation
            self._coarse = self._plan_coarse(generation, cores) if focus is not None else None
            self.queue.set_focus(focus)
            self.queue.put(needed.values())
            return len(cores)

    def _plan_coarse(self, generation: int,
                     cores: list[Tile]) -> tuple[int, CoarseGrid, list[Tile]] | None:
        """The coarse tiles of a view, when a preview is on, fits and is worth it."""
        dense = self.options.mode is OutputMode.DENSE
        if not self.preview or not dense or len(cores) <= self.preview_min_tiles:
            return None
        keep = self.computer.tile_filter
        kept = [c for c in cores if keep is None or keep(c)]
        if len(kept) <= self.preview_min_tiles:
            return None
        found = self.coarse.tiles_for(_bounding([self._clip(c.core) for c in kept]))
        return None if found is None else (generation, *found)

    @property
    def pending(self) -> int:
        """Cores of the current request not finished yet."""
        with self._lock:
            return len(self._pending)

    @property
    def done_tiles(self) -> int:
        """Cores finished so far (written, or all tissue-free)."""
        with self._lock:
            return len(self._done)

    def close(self) -> None:
        """Stop serving (the worker's :meth:`serve` returns) and delete a temporary store."""
        self.queue.close()
        self.store.close()

    # -- worker side --------------------------------------------------------------------------
    def serve(self, should_stop: Callable[[], bool] | None = None,
              poll_interval: float = 0.05) -> Iterator[LiveUpdate]:
        """Compute queued tiles batch by batch, writing finished cores; yield an update each.

        Runs until :meth:`close` (or ``should_stop()``); an idle session waits for requests.
        A batch that fails (a model that does not fit the image, out of GPU memory) yields an
        update with ``error`` and its tiles are dropped; later requests are served as usual.
        """
        while not (should_stop is not None and should_stop()):
            coarse = self._take_coarse()
            if coarse is not None:
                yield self._serve_coarse(*coarse)
                continue
            batch = self.queue.get_batch(self.options.batch_size, timeout=poll_interval)
            if not batch:
                if self.queue.closed:
                    return
                continue
            generation = batch[0].generation
            if self._coarse is not None and generation == self._coarse[0]:
                # the request came while this worker waited: its coarse pass goes first
                self.queue.put([req.tile for req in batch], generation=generation)
                continue
            tiles = [req.tile for req in batch]
            try:
                outputs = self.computer.compute(tiles)
            except Exception as err:  # reported to the GUI; the session serves on
                yield self._failed(tiles, err, generation)
                continue
            yield self._finish(outputs, generation)

    def _take_coarse(self) -> tuple[int, CoarseGrid, list[Tile]] | None:
        with self._lock:
            coarse, self._coarse = self._coarse, None
        if coarse is None or coarse[0] != self.queue.generation:
            return None  # none, or a pan since
        return coarse

    def _serve_coarse(self, generation: int, coarse: CoarseGrid,
                      tiles: list[Tile]) -> LiveUpdate:
        """Compute the coarse pass and paint it into the still-pending cores."""
        try:
            outputs = coarse.computer.compute(tiles)
        except Exception as err:  # the working tiles follow all the same
            with self._lock:
                pending, requested = len(self._pending), self._requested
            return LiveUpdate(pending=pending, requested=requested, generation=generation,
                              error=f"preview: {type(err).__name__}: {err}")
        keep = self.computer.tile_filter
        with self._lock:  # only this worker finishes cores: pending ones stay unrefined
            targets = {key: self._clip(core.core) for key, core in self._pending.items()
                       if keep is None or keep(core)}
        parts: list[tuple[Region, np.ndarray]] = []
        painted: set[Key] = set()
        for out in outputs:
            for key, target in targets.items():
                for part, values in self.coarse.upsample(coarse, out, [target]):
                    parts.append((part, values))
                    painted.add(key)
        bounds = _bounding([part for part, _ in parts])
        if bounds is not None:  # one read and one write of the store, not one per core
            probabilities, labels = self.store.read(bounds)
            for part, values in parts:
                local = (slice(part.y0 - bounds.y0, part.y1 - bounds.y0),
                         slice(part.x0 - bounds.x0, part.x1 - bounds.x0))
                probabilities[(slice(None), *local)] = values
                labels[local] = labels_from_probabilities(values, self.options.threshold)
            self.store.write(bounds, probabilities, labels, update_pyramid=True)
        with self._lock:
            self.previewed |= painted - self._done
            pending, requested = len(self._pending), self._requested
        return LiveUpdate(tiles=len(painted), region=bounds, pending=pending,
                          requested=requested, generation=generation,
                          computed=0, preview=True, preview_mpp=coarse.mpp)

    def _failed(self, tiles: list[Tile], err: Exception, generation: int) -> LiveUpdate:
        failed = {t.key for t in tiles}
        with self._lock:
            for key, core in list(self._pending.items()):
                if any(c.key in failed for c in self._contributors(core)):
                    del self._pending[key]
            pending, requested = len(self._pending), self._requested
        return LiveUpdate(pending=pending, requested=requested, generation=generation,
                          error=f"{type(err).__name__}: {err}")

    def _finish(self, outputs: list[TileOutput], generation: int) -> LiveUpdate:
        counts = {"computed": 0, "cached": 0, "skipped": 0}
        known: dict[Key, TileOutput] = {}
        for out in outputs:
            counts[out.source] += 1
            known[out.tile.key] = out
        written: list[Region] = []
        for core in self._affected(outputs):
            region = self._compose_and_write(core, known)
            if region is not None:
                written.append(region)
        bounds = _bounding(written)
        if bounds is not None:
            self.store.update_pyramid(bounds)  # once per batch, not per tile
        with self._lock:
            pending, requested = len(self._pending), self._requested
        return LiveUpdate(tiles=len(written), region=bounds, pending=pending,
                          requested=requested, generation=generation, **counts)

    def _contributors(self, core: Tile) -> list[Tile]:
        if self.grid.overlap == 0:
            return [core]
        return self.grid.tiles_in(self._clip(core.core), blended=True)

    def _clip(self, region: Region) -> Region:
        h, w = self.plan.working_shape
        return Region(max(0, region.y0), max(0, region.x0), min(h, region.y1), min(w, region.x1))

    def _affected(self, outputs: list[TileOutput]) -> list[Tile]:
        """Unfinished cores that the outputs contribute to."""
        if self.grid.overlap == 0:
            cores = [out.tile for out in outputs]
        else:
            seen: dict[Key, Tile] = {}
            for out in outputs:
                for core in self.grid.tiles_in(self._clip(out.tile.window), blended=False):
                    seen.setdefault(core.key, core)
            cores = list(seen.values())
        with self._lock:
            return [c for c in cores if c.key not in self._done]

    def _compose_and_write(self, core: Tile, known: dict[Key, TileOutput]) -> Region | None:
        parts = []
        for tile in self._contributors(core):
            out = known.get(tile.key) or self.computer.triage(tile)
            if out is None:
                return None  # a neighbour is still to come
            parts.append(out)
        region = self._clip(core.core)
        wrote = None
        if any(p.values is not None for p in parts):
            agg = MemoryAggregator(self.n_outputs, region.shape, origin=region.start)
            for out in parts:
                if out.values is not None:
                    agg.aggregate(*contribution(out, self.options.blend.value,
                                                self.options.mode.value, self._weights))
            probs = agg.finalize()
            labels = labels_from_probabilities(probs, self.options.threshold)
            self.store.write(region, probs, labels, update_pyramid=False)
            wrote = region
        with self._lock:
            self._done.add(core.key)
            self._pending.pop(core.key, None)
            self.previewed.discard(core.key)
        return wrote
