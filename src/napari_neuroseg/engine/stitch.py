"""Stitching: tile outputs into an aggregator, and where the result sits in the world.

:func:`contribution` turns one tile output into what it adds to the aggregator (its core
with ``blend="none"``, else its window with blending weights; tile-mode outputs broadcast over
it); :func:`stitch` feeds a stream of outputs to an aggregator and finalizes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.engine.aggregate import Aggregator, MemoryAggregator
from napari_neuroseg.engine.blending import blend_weights
from napari_neuroseg.engine.compute import TileCounts, TileOutput
from napari_neuroseg.engine.errors import EngineError

AggregatorFactory = Callable[..., Aggregator]


def contribution(
    out: TileOutput, blend: str, mode: str, weights: dict[tuple[int, int], np.ndarray]
) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """(values, location, weights) that one tile adds to the aggregator."""
    tile, values = out.tile, out.values
    assert values is not None
    target = tile.core if blend == "none" else tile.window
    h, w = target.shape
    if mode == "tile":
        values = np.broadcast_to(values[:, None, None], (values.shape[0], h, w))
    elif blend == "none":
        dy, dx = tile.core.y0 - tile.window.y0, tile.core.x0 - tile.window.x0
        values = values[:, dy : dy + h, dx : dx + w]
    if blend == "none":
        return values, target.start, None
    if (h, w) not in weights:
        weights[(h, w)] = blend_weights((h, w), blend)
    return values, target.start, weights[(h, w)]


def stitch(
    outputs: Iterator[TileOutput],
    total: int,
    *,
    shape: tuple[int, ...],
    origin: tuple[int, ...],
    blend: str,
    mode: str,
    n_outputs: int | None,
    aggregator: AggregatorFactory | None,
) -> tuple[Any, Any, TileCounts]:
    """Aggregate tile outputs; returns (finalized values, covered mask, counts)."""
    factory = aggregator if aggregator is not None else MemoryAggregator
    agg = None
    counts = TileCounts()
    weights: dict[tuple[int, int], np.ndarray] = {}
    for out in outputs:
        counts.count(out)
        if out.values is None:
            continue
        k = out.values.shape[0]
        if n_outputs is not None and k != n_outputs:
            raise EngineError(f"the predictor returned {k} outputs per pixel, not {n_outputs}")
        if agg is None:
            agg = factory(k, shape, origin=origin)
        values, location, w = contribution(out, blend, mode, weights)
        if len(shape) == 3:
            values, w = values[:, None], (None if w is None else w[None])
            location = (out.tile.z, *location)
        agg.aggregate(values, location, w)
    counts.cancelled = total - (counts.computed + counts.cached + counts.skipped)
    if agg is None:
        agg = factory(n_outputs or 1, shape, origin=origin)
    result = agg.finalize()
    if isinstance(result, zarr.Array):
        result = da.from_zarr(result)
    return result, getattr(agg, "covered", None), counts


def world_offset(
    translate: Sequence[float], scale: Sequence[float], start: Sequence[int]
) -> tuple[float, ...]:
    """World position of pixel ``start`` of an array placed at ``translate`` with ``scale``."""
    if not len(translate) == len(scale) == len(start):
        raise EngineError(f"scale {scale} and translate {translate} need {len(start)} values")
    return tuple(float(t) + o * float(s) for t, s, o in zip(translate, scale, start, strict=True))
