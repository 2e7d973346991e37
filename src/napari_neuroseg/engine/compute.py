"""From tiles to predictor outputs: read, preprocess, batch, predict, check, cache.

:class:`TileComputer` turns a batch of :class:`~napari_neuroseg.engine.tiling.Tile` into one
:class:`TileOutput` per tile. Tiles the ``tile_filter`` rejects are ``"skipped"``; tiles found
in the cache are ``"cached"``; the rest are read (by reflection past the image border),
passed through the preprocessing steps in the image's own layout (``"yx"`` or ``"yxc"``),
converted to float32 ``"chw"``, checked for NaNs, stacked into one NCHW batch and predicted.
Outputs are checked and cropped to the tile window (the halo removed) before caching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import special

from napari_neuroseg.engine.cache import CacheKey, TileCache, TileKey
from napari_neuroseg.engine.choices import Activation, OutputMode
from napari_neuroseg.engine.errors import EngineError, TileError
from napari_neuroseg.engine.tiling import Tile, TileGrid, read_patches

Predictor = Callable[[np.ndarray], Any]
PreprocessStep = Callable[[np.ndarray], np.ndarray]
TileFilter = Callable[[Tile], bool]
MODES = OutputMode.values()
ACTIVATIONS = Activation.values()


class TileOutput(NamedTuple):
    """One tile's result.

    ``values`` is ``(K, window_h, window_w)`` in dense mode, ``(K,)`` in tile mode, and None
    when ``source`` is ``"skipped"``; ``source`` is ``"computed"``, ``"cached"`` or
    ``"skipped"``.
    """

    tile: Tile
    values: np.ndarray | None
    source: str


@dataclass
class TileCounts:
    """How the tiles of one prediction were obtained."""

    computed: int = 0
    cached: int = 0
    skipped: int = 0
    cancelled: int = 0

    def count(self, output: TileOutput) -> None:
        """Add one tile output to the tally."""
        setattr(self, output.source, getattr(self, output.source) + 1)


def apply_activation(values: np.ndarray, activation: str) -> np.ndarray:
    """Softmax or sigmoid over axis 0 (the class axis), or ``values`` unchanged for "none"."""
    if activation == "sigmoid":
        return special.expit(values).astype(np.float32)
    if activation == "softmax":
        shifted = np.exp(values - values.max(axis=0, keepdims=True))
        return (shifted / shifted.sum(axis=0, keepdims=True)).astype(np.float32)
    return values


@dataclass
class TileComputer:
    """Computes tile outputs of one image with one predictor.

    Parameters
    ----------
    image : array-like
        ``"yx"`` or ``"yxc"`` array, or ``"zyx"`` / ``"zyxc"`` when tiles carry a plane ``z``.
    predictor : callable
        ``predictor(batch)`` with ``batch`` float32 ``(N, C, H, W)``.
    grid : TileGrid
    mode : OutputMode or {"dense", "tile"}
    preprocess : sequence of callable
        Steps ``step(patch) -> patch`` on each raw patch, in order.
    tile_filter : callable, optional
        ``tile_filter(tile) -> bool``; False skips the tile.
    cache : TileCache, optional
    cache_key : CacheKey, optional
        Required with ``cache``.
    volume : bool
        True when ``image`` is a ``"zyx"`` / ``"zyxc"`` volume and tiles carry their plane.
    """

    image: Any
    predictor: Predictor
    grid: TileGrid
    mode: str = "dense"
    preprocess: Sequence[PreprocessStep] = ()
    tile_filter: TileFilter | None = None
    cache: TileCache | None = None
    cache_key: CacheKey | None = None
    volume: bool = False

    def __post_init__(self) -> None:
        # a plain string: the mode is part of the tile cache's keys
        self.mode = str(OutputMode.parse(self.mode).value)
        if self.cache is not None and self.cache_key is None:
            raise EngineError("a cache needs a cache_key (image, model and preprocessing keys)")
        self.preprocess = tuple(self.preprocess)

    def _key(self, tile: Tile) -> TileKey:
        assert self.cache_key is not None
        return TileKey.make(self.cache_key, (*self.grid.key(), self.mode), tile.key)

    def triage(self, tile: Tile) -> TileOutput | None:
        """The output of a tile that needs no prediction (skipped or cached), else None."""
        if self.tile_filter is not None and not self.tile_filter(tile):
            return TileOutput(tile, None, "skipped")
        hit = self.cache.get(self._key(tile)) if self.cache is not None else None
        return TileOutput(tile, hit, "cached") if hit is not None else None

    def predict(self, tiles: Sequence[Tile]) -> list[TileOutput]:
        """Predict ``tiles`` as one batch (no filter, no cache lookup) and cache the results."""
        return self.run(tiles, self.load(tiles))

    def load(self, tiles: Sequence[Tile]) -> np.ndarray:
        """Read and preprocess ``tiles`` into one float32 ``(N, C, H, W)`` batch.

        Touches neither the predictor nor the cache, so it may run on another thread while
        the predictor works on the previous batch (see :func:`iter_outputs`).
        """
        batch: np.ndarray | None = None
        for i, (tile, patch) in enumerate(zip(tiles, self._read(tiles), strict=True)):
            chw = self._prepare(tile, patch)
            if batch is None:
                batch = np.empty((len(tiles), *chw.shape), np.float32)
            batch[i] = chw
        assert batch is not None, "load needs at least one tile"
        return batch

    def run(self, tiles: Sequence[Tile], batch: np.ndarray) -> list[TileOutput]:
        """Predict a batch made by :meth:`load` from ``tiles`` and cache the results."""
        outputs = []
        for tile, v in zip(tiles, self._predict(tiles, batch), strict=True):
            if self.cache is not None:
                self.cache.put(self._key(tile), v)
            outputs.append(TileOutput(tile, v, "computed"))
        return outputs

    def compute(self, tiles: Sequence[Tile]) -> list[TileOutput]:
        """Outputs of ``tiles``, in the same order."""
        outputs = [self.triage(tile) for tile in tiles]
        todo = [i for i, out in enumerate(outputs) if out is None]
        if todo:
            for i, out in zip(todo, self.predict([tiles[i] for i in todo]), strict=True):
                outputs[i] = out
        return outputs  # type: ignore[return-value]

    def _read(self, tiles: Sequence[Tile]) -> list[np.ndarray]:
        if not self.volume:
            return read_patches(self.image, tiles)
        patches: dict[int, np.ndarray] = {}
        for z in sorted({t.z for t in tiles}):
            idx = [i for i, t in enumerate(tiles) if t.z == z]
            for i, patch in zip(
                idx, read_patches(self.image[z], [tiles[i] for i in idx]), strict=True
            ):
                patches[i] = patch
        return [patches[i] for i in range(len(tiles))]

    def _prepare(self, tile: Tile, patch: np.ndarray) -> np.ndarray:
        if self.preprocess and not patch.flags.owndata:
            patch = patch.copy()  # a step working in place must not touch the caller's image
        for step in self.preprocess:
            try:
                patch = np.asarray(step(patch))
            except Exception as err:
                name = getattr(step, "__name__", repr(step))
                raise TileError(tile, f"preprocessing step {name} failed: {err}") from err
        chw = patch[None] if patch.ndim == 2 else np.moveaxis(patch, -1, 0)
        # integers cannot hold NaN or infinity: only floating input needs the check
        if chw.dtype.kind in "fc" and not np.isfinite(chw).all():
            raise TileError(
                tile, "input contains NaN or infinite values (check the image and preprocessing)"
            )
        return chw

    def _predict(self, tiles: Sequence[Tile], batch: np.ndarray) -> list[np.ndarray]:
        try:
            out = self.predictor(batch)
        except Exception as err:
            raise TileError(
                tiles[0],
                f"the predictor failed on a batch of {len(tiles)} tile(s) of shape "
                f"{batch.shape[1:]} (channels, height, width): {type(err).__name__}: {err}. "
                f"The image gives {batch.shape[1]} channel(s) per pixel after preprocessing; "
                "check that this matches the model's input channels (a 'zyx' volume goes "
                "through predict_volume, not predict_region)",
            ) from err
        out = self._check_output(tiles, batch.shape, out)
        return [self._crop(v) for v in out]

    def _check_output(self, tiles: Sequence[Tile], in_shape: tuple, out: Any) -> np.ndarray:
        if hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        out = np.asarray(out, dtype=np.float32)
        n, _, h, w = in_shape
        if self.mode == "tile" and out.ndim == 1 and out.shape[0] == n:
            out = out[:, None]
        ok = out.shape[0] == n and (
            out.ndim == 2 if self.mode == "tile" else out.ndim == 4 and out.shape[2:] == (h, w)
        )
        if not ok:
            want = "(N, K)" if self.mode == "tile" else f"(N, K, {h}, {w})"
            hint = "" if self.mode == "tile" else "; per-tile outputs (N, K) need mode='tile'"
            raise TileError(
                tiles[0], f"predictor returned shape {out.shape}, expected {want} with N={n}{hint}"
            )
        bad = ~np.isfinite(out.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise TileError(tiles[int(np.argmax(bad))], "the predictor returned NaN or infinity")
        return out

    def _crop(self, values: np.ndarray) -> np.ndarray:
        halo = self.grid.halo
        if self.mode == "tile" or halo == 0:
            return values
        return values[:, halo:-halo, halo:-halo]


def _batches(
    computer: TileComputer, tiles: Sequence[Tile], batch_size: int
) -> Iterator[tuple[list[TileOutput], list[Tile]]]:
    """(outputs known without predicting, next batch to predict), in tile order."""
    known: list[TileOutput] = []
    pending: list[Tile] = []
    for tile in tiles:
        out = computer.triage(tile)
        if out is not None:
            known.append(out)
        else:
            pending.append(tile)
        if len(pending) == batch_size:
            yield known, pending
            known, pending = [], []
    if known or pending:
        yield known, pending


def iter_outputs(
    computer: TileComputer,
    tiles: Sequence[Tile],
    *,
    batch_size: int,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    prefetch: bool = True,
) -> Iterator[TileOutput]:
    """Compute ``tiles`` batch by batch, yielding each output as soon as it is known.

    Skipped and cached tiles are yielded as they are met and take no place in a batch, so
    every predictor call gets ``batch_size`` tiles to compute (but the last). With
    ``prefetch`` one reader thread reads and preprocesses the next batch while the predictor
    works on the current one (the predictor and the cache stay on the calling thread).
    ``should_stop()`` is checked before every batch (the generator then just ends);
    ``on_progress(done, total)`` is called after every batch and at the end.
    """
    if batch_size < 1:
        raise EngineError(f"batch_size must be at least 1, got {batch_size}")
    total, done, reported = len(tiles), 0, -1
    plan = _batches(computer, tiles, batch_size)
    pool = ThreadPoolExecutor(1, thread_name_prefix="neuroseg-read") if prefetch else None

    def submit(batch: list[Tile]) -> Future[np.ndarray] | None:
        if not batch:
            return None
        if pool is None:
            done_future: Future[np.ndarray] = Future()
            done_future.set_result(computer.load(batch))
            return done_future
        return pool.submit(computer.load, batch)

    try:
        step = next(plan, None)
        loading = submit(step[1]) if step is not None else None
        while step is not None:
            known, batch = step
            for out in known:
                done += 1
                yield out
            step = next(plan, None)
            if not batch:
                continue
            if should_stop is not None and should_stop():
                return
            assert loading is not None
            data = loading.result()
            loading = submit(step[1]) if step is not None else None
            yield from computer.run(batch, data)
            done += len(batch)
            if on_progress is not None:
                on_progress(done, total)
                reported = done
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if on_progress is not None and reported != done:
        on_progress(done, total)
