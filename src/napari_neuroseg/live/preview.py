"""A coarse first pass of a live view: the model on a coarser grid, shown until refined.

After a pan, the working-resolution tiles of the whole screen take seconds; the same model run
on a grid ``factor`` times coarser (a coarser pyramid level, resampled as needed) covers the
screen in a handful of tiles. :class:`CoarsePass` picks the smallest factor (2, 4, 8, ...) whose
tiles over the view fit in ``max_tiles``, computes them, and maps each coarse output onto
the working grid by nearest neighbour (pixel centres through the two grids' world geometry),
so :class:`~napari_neuroseg.live.session.LiveSession` can write it into the cores that are
still pending. The refined cores then overwrite it, tile by tile.

The coarse outputs are the model's at a resolution it was not trained for: a preview, which
the widgets label as such. Pure numpy over the engine: no napari, no Qt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from napari_neuroseg.analysis import SlidePlan
from napari_neuroseg.engine import (
    Region,
    Tile,
    TileCache,
    TileComputer,
    TileGrid,
    TileOutput,
    choose_level,
)
from napari_neuroseg.live.viewport import Box, box_to_pixels

__all__ = ["FACTORS", "CoarseGrid", "CoarsePass"]

#: Coarsening factors tried, finest first.
FACTORS = (2, 4, 8, 16, 32)


@dataclasses.dataclass
class CoarseGrid:
    """The model's tiles on one coarser grid of a slide.

    Attributes
    ----------
    factor : int
        Coarse pixel size / working pixel size asked for.
    plan : SlidePlan
        The fine plan with the coarse level choice, array and geometry (no tile filter).
    grid : TileGrid
        Tiles of ``plan.array`` (no overlap: a coarse pixel comes from one tile).
    computer : TileComputer
        Reads, preprocesses and predicts the coarse tiles (cached under the coarse key).
    """

    factor: int
    plan: SlidePlan
    grid: TileGrid
    computer: TileComputer

    @property
    def mpp(self) -> float:
        """Pixel size of the coarse grid (slide units)."""
        return self.plan.choice.working_mpp


def _world_box(region: Region, scale: tuple[float, float],
               translate: tuple[float, float]) -> Box:
    """The world box a region of pixels covers (pixel ``i`` spans ``t + s * [i - .5, i + .5)``)."""
    (sy, sx), (ty, tx) = scale, translate
    return Box(ty + sy * (region.y0 - 0.5), tx + sx * (region.x0 - 0.5),
               ty + sy * (region.y1 - 0.5), tx + sx * (region.x1 - 0.5))


class CoarsePass:
    """Plans and maps the coarse first pass of a :class:`LiveSession`.

    Parameters
    ----------
    plan : SlidePlan
        The session's (fine) plan.
    predictor : callable
        The session's predictor.
    model_key : str
        Identifies the weights in the tile cache.
    cache : TileCache, optional
        Shared with the session (coarse tiles have their own keys).
    max_tiles : int
        Most coarse tiles one view may need (the factor grows until it fits).
    """

    def __init__(self, plan: SlidePlan, predictor: Callable[[np.ndarray], Any],
                 model_key: str, cache: TileCache | None = None, max_tiles: int = 4) -> None:
        self.plan, self.predictor, self.model_key = plan, predictor, model_key
        self.cache, self.max_tiles = cache, int(max_tiles)
        self._grids: dict[int, CoarseGrid | None] = {}

    def coarse_grid(self, factor: int) -> CoarseGrid | None:
        """The coarse grid of ``factor`` (None when the slide is smaller than one coarse tile)."""
        if factor not in self._grids:
            self._grids[factor] = self._make(factor)
        return self._grids[factor]

    def _make(self, factor: int) -> CoarseGrid | None:
        image, fine = self.plan.image, self.plan.choice
        mpps = [fine.base_mpp * d for d in image.downsamples()]
        choice = choose_level(mpps, fine.working_mpp * factor)
        array = choice.working_array(image.levels[choice.level])
        if min(int(array.shape[0]), int(array.shape[1])) < 2:
            return None
        scale, translate = choice.geometry(tuple(image.translate or (0.0, 0.0)))
        plan = dataclasses.replace(self.plan, choice=choice, array=array, scale=scale,
                                   translate=translate, tile_filter=None, notes=[])
        spec = plan.spec
        grid = TileGrid((int(array.shape[0]), int(array.shape[1])), spec.input.patch_size,
                        spec.input.halo, 0)
        computer = TileComputer(array, self.predictor, grid, "dense", plan.preprocess, None,
                                self.cache, plan.cache_key(self.model_key))
        return CoarseGrid(factor, plan, grid, computer)

    def coarse_region(self, coarse: CoarseGrid, region: Region) -> Region | None:
        """The coarse pixels under ``region`` (working pixels)."""
        box = _world_box(region, self.plan.scale, self.plan.translate)
        return box_to_pixels(box, coarse.plan.scale, coarse.plan.translate,
                             coarse.grid.image_shape)

    def tiles_for(self, region: Region) -> tuple[CoarseGrid, list[Tile]] | None:
        """The coarsest-needed grid whose tiles over ``region`` fit ``max_tiles``, and them.

        Returns None when no factor fits (or the slide is too small to coarsen).
        """
        for factor in FACTORS:
            coarse = self.coarse_grid(factor)
            if coarse is None:
                return None
            where = self.coarse_region(coarse, region)
            if where is None:
                return None
            tiles = coarse.grid.tiles_in(where, blended=False)
            if len(tiles) <= self.max_tiles:
                return coarse, tiles
        return None

    def _indices(self, coarse: CoarseGrid, start: int, stop: int, axis: int) -> np.ndarray:
        """Coarse index of the centre of every working pixel ``start..stop-1`` on ``axis``."""
        centres = self.plan.translate[axis] + self.plan.scale[axis] * np.arange(start, stop)
        index = (centres - coarse.plan.translate[axis]) / coarse.plan.scale[axis] + 0.5
        return np.floor(index).astype(np.int64)

    def upsample(self, coarse: CoarseGrid, output: TileOutput,
                 cores: list[Region]) -> Iterator[tuple[Region, np.ndarray]]:
        """Each core's part covered by one coarse output, with its values on the working grid.

        Parameters
        ----------
        coarse : CoarseGrid
            The grid ``output`` was computed on.
        output : TileOutput
            A dense coarse output (``values`` over the tile's window, which is its core).
        cores : list of Region
            Working-grid regions to fill (pending cores, clipped to the working grid).

        Yields
        ------
        region : Region
            Working pixels inside a core whose centres fall in the coarse tile's core.
        values : numpy.ndarray
            ``(K, h, w)`` float32, the coarse values there.
        """
        if output.values is None:
            return
        tile = output.tile
        h, w = coarse.grid.image_shape
        core = Region(tile.core.y0, tile.core.x0, min(tile.core.y1, h), min(tile.core.x1, w))
        window = tile.window
        for target in cores:
            rows = self._indices(coarse, target.y0, target.y1, 0)
            cols = self._indices(coarse, target.x0, target.x1, 1)
            ry = np.flatnonzero((rows >= core.y0) & (rows < core.y1))
            rx = np.flatnonzero((cols >= core.x0) & (cols < core.x1))
            if ry.size == 0 or rx.size == 0:
                continue
            part = Region(target.y0 + int(ry[0]), target.x0 + int(rx[0]),
                          target.y0 + int(ry[-1]) + 1, target.x0 + int(rx[-1]) + 1)
            values = output.values[:, rows[ry][:, None] - window.y0,
                                   cols[rx][None, :] - window.x0]
            yield part, np.ascontiguousarray(values, dtype=np.float32)
