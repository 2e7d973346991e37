"""What the label and probability writers share: their error, and pyramid halving.

Used by :mod:`napari_neuroseg.io.writers` (TIFF, OME-TIFF, PNG),
:mod:`napari_neuroseg.io.ome_zarr` and :mod:`napari_neuroseg.io.nifti_writer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np

from .downsample import downsample

__all__ = [
    "TILE",
    "WriterError",
    "fitting_int_type",
    "halve_mean",
    "halve_nearest",
    "halving_pyramid",
]

TILE = 256  #: tile edge of tiled TIFF pages; a pyramid halves until a plane fits in one


class WriterError(ValueError):
    """Data that cannot be written to the requested file; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def fitting_int_type(low: int, high: int, allowed: Sequence[str]) -> str | None:
    """The first of ``allowed`` integer types that holds ``low..high``, else ``None``."""
    for name in allowed:
        info = np.iinfo(name)
        if info.min <= low and high <= info.max:
            return name
    return None


def halve_nearest(level: da.Array) -> da.Array:
    """Every second row and column (labels stay labels)."""
    return level[..., ::2, ::2]


def halve_mean(level: da.Array) -> da.Array:
    """2x2 means (an odd last row/column is averaged with itself)."""
    return downsample(level, axes=(-2, -1), odd="edge")


def halving_pyramid(level0: da.Array, halve: Callable[[da.Array], da.Array]) -> list[da.Array]:
    """Level 0 and halvings of it until the plane fits in one tile."""
    levels = [level0]
    while max(levels[-1].shape[-2:]) > TILE:
        levels.append(halve(levels[-1]))
    return levels
