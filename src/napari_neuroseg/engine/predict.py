"""Region prediction: tiles in, stitched per-class maps and labels out.

:func:`predict_region` predicts one rectangle of a ``"yx"`` / ``"yxc"`` image,
:func:`predict_volume` a ``"zyx"`` / ``"zyxc"`` volume slice by slice, and
:func:`iter_predict_tiles` yields tile outputs as they complete, for viewers that paint
results progressively. None of them knows about files, models or GUIs: a predictor is any
callable from a float32 NCHW batch to ``(N, K, H, W)`` (``mode="dense"``) or ``(N, K)``
(``mode="tile"``, broadcast over the tile's window). How a model runs (tile geometry, batch
size, blending, ...) is one :class:`~napari_neuroseg.engine.options.EngineOptions`; what
changes from call to call (region, cache, callbacks, world geometry) are arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from napari_neuroseg.engine.aggregate import labels_from_probabilities
from napari_neuroseg.engine.cache import CacheKey, TileCache
from napari_neuroseg.engine.choices import Activation, BlendMode
from napari_neuroseg.engine.compute import (
    Predictor,
    TileComputer,
    TileCounts,
    TileOutput,
    apply_activation,
    iter_outputs,
)
from napari_neuroseg.engine.errors import EngineError
from napari_neuroseg.engine.options import EngineOptions
from napari_neuroseg.engine.stitch import AggregatorFactory, stitch, world_offset
from napari_neuroseg.engine.tiling import Region, Tile, coerce_region


@dataclass
class PredictionResult:
    """Stitched output of one prediction.

    Parameters
    ----------
    probabilities : array-like
        ``(K, H, W)`` float32 (``(K, Z, H, W)`` for volumes): the blended predictor outputs
        (probabilities when the predictor or ``activation`` makes them so). numpy, or dask
        over zarr with :class:`~napari_neuroseg.engine.aggregate.ZarrAggregator`. 0 where no
        tile was computed.
    labels : array-like
        ``(H, W)`` (or ``(Z, H, W)``) uint8 label map: argmax, or a threshold for one output.
    covered : array-like or None
        Boolean mask of the pixels some tile contributed to (None if the aggregator cannot say).
    region : Region
        The predicted pixels of the input image (in-plane for volumes).
    planes : range or None
        The predicted planes of a volume.
    scale, translate : tuple of float
        napari layer geometry that overlays the result on the input in world units.
    counts : TileCounts
        Tiles computed, served from the cache, skipped by the filter, or cancelled.
    complete : bool
        False when ``should_stop`` ended the prediction early.
    """

    probabilities: Any
    labels: Any
    covered: Any
    region: Region
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    counts: TileCounts
    complete: bool = True
    planes: range | None = None

    @property
    def n_outputs(self) -> int:
        """Number of output channels K."""
        return int(self.probabilities.shape[0])


def _order(tiles: list[Tile], focus: tuple[float, float] | None) -> list[Tile]:
    if focus is None:
        return tiles
    fy, fx = focus
    return sorted(tiles, key=lambda t: math.hypot(t.core.center[0] - fy, t.core.center[1] - fx))


def _outputs(
    computer: TileComputer,
    tiles: list[Tile],
    options: EngineOptions,
    should_stop: Callable[[], bool] | None,
    on_progress: Callable[[int, int], None] | None,
) -> Iterator[TileOutput]:
    outputs = iter_outputs(
        computer,
        tiles,
        batch_size=options.batch_size,
        should_stop=should_stop,
        on_progress=on_progress,
    )
    activation = options.activation
    for out in outputs:
        if out.values is not None and activation is not Activation.NONE:
            out = out._replace(values=apply_activation(out.values, activation.value))
        yield out


def _computer(
    image: Any,
    predictor: Predictor,
    options: EngineOptions,
    cache: TileCache | None,
    cache_key: CacheKey | None,
    *,
    volume: bool = False,
) -> TileComputer:
    grid = options.grid(image.shape[1:3] if volume else image.shape[:2])
    return TileComputer(
        image,
        predictor,
        grid,
        options.mode.value,
        options.preprocess,
        options.tile_filter,
        cache,
        cache_key,
        volume=volume,
    )


def _check_options(options: EngineOptions) -> None:
    if not isinstance(options, EngineOptions):
        raise EngineError(
            f"expected EngineOptions (napari_neuroseg.engine.EngineOptions), got "
            f"{type(options).__name__}"
        )


def _plan_image(
    image: Any,
    predictor: Predictor,
    options: EngineOptions,
    region: Region | tuple[slice, slice] | None,
    cache: TileCache | None,
    cache_key: CacheKey | None,
) -> tuple[TileComputer, list[Tile], Region]:
    """Check the image and geometry; the computer, the tiles and the region."""
    _check_options(options)
    if image.ndim not in (2, 3):
        raise EngineError(
            f"expected a 'yx' or 'yxc' image, got shape {tuple(image.shape)}; "
            "use predict_volume for 'zyx' volumes"
        )
    computer = _computer(image, predictor, options, cache, cache_key)
    region = coerce_region(region, image.shape[:2])
    tiles = computer.grid.tiles_in(region, blended=options.blend is not BlendMode.NONE)
    return computer, tiles, region


def iter_predict_tiles(
    image: Any,
    predictor: Predictor,
    options: EngineOptions,
    *,
    region: Region | tuple[slice, slice] | None = None,
    cache: TileCache | None = None,
    cache_key: CacheKey | None = None,
    focus: tuple[float, float] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[TileOutput]:
    """Yield one :class:`~napari_neuroseg.engine.compute.TileOutput` per tile of ``region``.

    Takes the arguments of :func:`predict_region` (except ``aggregator``, ``scale`` and
    ``translate``; ``options.n_outputs`` and ``options.threshold`` are not used) plus
    ``focus``: a (y, x) point whose nearest tiles come first (raster order when None).
    ``options.blend`` only decides which tiles are needed (``"none"``: those whose core meets
    the region; otherwise those whose window does). Each output's values already went
    through ``options.activation``. Arguments are checked at the call; the returned generator
    ends early when ``should_stop()`` turns true (checked before each batch).
    """
    computer, tiles, _ = _plan_image(image, predictor, options, region, cache, cache_key)
    return _outputs(computer, _order(tiles, focus), options, should_stop, on_progress)


def predict_region(
    image: Any,
    predictor: Predictor,
    options: EngineOptions,
    *,
    region: Region | tuple[slice, slice] | None = None,
    cache: TileCache | None = None,
    cache_key: CacheKey | None = None,
    aggregator: AggregatorFactory | None = None,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictionResult:
    """Predict a region of a 2D image tile by tile and stitch the result.

    Parameters
    ----------
    image : array-like
        Dask or numpy array (or a :class:`~napari_neuroseg.engine.levels.ResampledArray`),
        axes ``"yx"`` or ``"yxc"``. Only the tiles' pixels are read.
    predictor : callable
        ``predictor(batch)``: float32 ``(N, C, H, W)`` -> ``(N, K, H, W)`` or ``(N, K)``.
    options : EngineOptions
        Tile geometry, batch size, blend, mode, activation, expected outputs, label
        threshold, preprocessing and tile filter
        (:meth:`EngineOptions.from_spec <napari_neuroseg.engine.options.EngineOptions.from_spec>`
        for a model).
    region : Region or (slice, slice), optional
        Pixels to predict; the whole image when None. Must lie inside the image.
    cache : TileCache, optional
        Tile outputs are looked up and stored here, under ``cache_key``.
    cache_key : CacheKey, optional
        Image, level, model and preprocessing keys; required with ``cache``.
    aggregator : callable, optional
        ``factory(n_outputs, shape, origin=...)`` returning an aggregator, e.g.
        ``functools.partial(ZarrAggregator, "out.zarr")``; in memory when None.
    scale, translate : (float, float)
        World geometry of ``image``'s pixel (0, 0); the result's is derived from them.
    should_stop : callable, optional
        Checked before every batch; the result is then partial (``complete=False``).
    on_progress : callable, optional
        ``on_progress(done, total)`` after every batch.

    Returns
    -------
    PredictionResult

    Raises
    ------
    EngineError
        Bad geometry, a region outside the image, ``options`` that are not
        :class:`EngineOptions`.
    TileError
        A tile with NaNs, a failing preprocessing step or predictor, or outputs of the wrong
        shape; the message names the tile.
    """
    computer, tiles, region = _plan_image(image, predictor, options, region, cache, cache_key)
    outputs = _outputs(computer, tiles, options, should_stop, on_progress)
    return _stitched(outputs, len(tiles), options, aggregator, region, region.shape,
                     region.start, scale, translate)


def predict_volume(
    volume: Any,
    predictor: Predictor,
    options: EngineOptions,
    *,
    planes: range | slice | None = None,
    region: Region | tuple[slice, slice] | None = None,
    cache: TileCache | None = None,
    cache_key: CacheKey | None = None,
    aggregator: AggregatorFactory | None = None,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0, 0.0),
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictionResult:
    """Predict a ``"zyx"`` / ``"zyxc"`` volume slice by slice (2D tiles on every plane).

    Takes the arguments of :func:`predict_region`, plus ``planes`` (a range or slice of z,
    all planes when None); ``region`` is in-plane, ``scale`` / ``translate`` are (z, y, x).
    Tiles carry their plane (``tile.z``) and batches may mix planes. The result's maps are
    ``(K, Z, H, W)`` and labels ``(Z, H, W)``.
    """
    _check_options(options)
    if volume.ndim not in (3, 4):
        raise EngineError(f"expected a 'zyx' or 'zyxc' volume, got shape {tuple(volume.shape)}")
    z_range = _coerce_planes(planes, volume.shape[0])
    computer = _computer(volume, predictor, options, cache, cache_key, volume=True)
    region = coerce_region(region, volume.shape[1:3])
    blended = options.blend is not BlendMode.NONE
    tiles = [t for z in z_range for t in computer.grid.tiles_in(region, blended=blended, z=z)]
    outputs = _outputs(computer, tiles, options, should_stop, on_progress)
    return _stitched(outputs, len(tiles), options, aggregator, region,
                     (len(z_range), *region.shape), (z_range.start, *region.start), scale,
                     translate, planes=z_range)


def _stitched(outputs: Any, n_tiles: int, options: EngineOptions,
              aggregator: AggregatorFactory | None, region: Region, shape: tuple[int, ...],
              origin: tuple[int, ...], scale: Sequence[float], translate: Sequence[float],
              planes: range | None = None) -> PredictionResult:
    """Stitch the tile outputs over ``shape`` at ``origin`` into a placed result."""
    values, covered, counts = stitch(
        outputs, n_tiles, shape=shape, origin=origin, blend=options.blend.value,
        mode=options.mode.value, n_outputs=options.n_outputs, aggregator=aggregator)
    return PredictionResult(
        probabilities=values,
        labels=labels_from_probabilities(values, options.threshold),
        covered=covered,
        region=region,
        planes=planes,
        scale=tuple(float(s) for s in scale),
        translate=world_offset(translate, scale, origin),
        counts=counts,
        complete=counts.cancelled == 0,
    )


def _coerce_planes(planes: range | slice | None, depth: int) -> range:
    if planes is None:
        return range(depth)
    if isinstance(planes, slice):
        planes = range(*planes.indices(depth))
    if planes.step != 1 or len(planes) == 0 or planes.start < 0 or planes.stop > depth:
        raise EngineError(f"planes {planes} must be a non-empty, step-1 range inside 0:{depth}")
    return planes
