"""Errors raised by the tile-inference engine; every message names the thing and the problem."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_neuroseg.engine.tiling import Tile


class EngineError(ValueError):
    """Bad arguments to the engine (patch geometry, region, blend mode, ...)."""


class TileError(EngineError):
    """Something went wrong on one tile: the message and :attr:`tile` say which.

    Parameters
    ----------
    tile : Tile
        The tile that failed.
    problem : str
        What went wrong, in words a person can act on.
    """

    def __init__(self, tile: Tile, problem: str) -> None:
        self.tile = tile
        self.problem = problem
        super().__init__(f"{tile.describe()}: {problem}")
