"""Pyramid level choice, tile resampling and output geometry in world units.

A model works at a pixel size (µm/px for slides). :func:`choose_level` picks the coarsest
pyramid level that is at least that fine; when the level's pixel size still differs from the
target by more than ``tolerance``, tiles are resampled through :class:`ResampledArray`, a lazy
view that computes only the pixels asked for. :meth:`LevelChoice.geometry` gives the napari
``scale`` and ``translate`` that make a prediction on the working grid overlay level 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from napari_neuroseg.engine.errors import EngineError
from napari_neuroseg.engine.tiling import Region, read_window


@dataclass(frozen=True)
class LevelChoice:
    """Which level to read and how much to resample it.

    Parameters
    ----------
    level : int
        Index into the pyramid.
    level_mpp : float
        Pixel size of that level.
    base_mpp : float
        Pixel size of level 0.
    target_mpp : float
        The model's working pixel size.
    factor : float
        Working pixel size / level pixel size actually applied: 1.0 when the level is close
        enough to the target, otherwise ``target_mpp / level_mpp`` (> 1 downsamples).
    """

    level: int
    level_mpp: float
    base_mpp: float
    target_mpp: float
    factor: float

    @property
    def resample(self) -> bool:
        """Whether tiles are resampled (``factor != 1``)."""
        return self.factor != 1.0

    @property
    def working_mpp(self) -> float:
        """Pixel size of the working grid (what the prediction's pixels measure)."""
        return self.level_mpp * self.factor

    def working_array(self, level_array: Any) -> Any:
        """The chosen level itself, or a lazy :class:`ResampledArray` of it."""
        return ResampledArray(level_array, self.factor) if self.resample else level_array

    def geometry(
        self, base_translate: Sequence[float] = (0.0, 0.0)
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari ``(scale, translate)`` of working pixel (0, 0), in level-0 world units.

        A working pixel spans ``working_mpp / base_mpp`` level-0 pixels, so its centre lies
        half a working pixel minus half a level-0 pixel past the level-0 origin.

        Parameters
        ----------
        base_translate : (float, float)
            World position of level-0 pixel (0, 0), i.e. the slide layer's ``translate``.
        """
        m = self.working_mpp
        shift = (m - self.base_mpp) / 2
        return (m, m), (base_translate[0] + shift, base_translate[1] + shift)

    def region_from_base(self, region: Region, working_shape: Sequence[int]) -> Region:
        """The working-grid region covering ``region`` given in level-0 pixels."""
        f = self.working_mpp / self.base_mpp
        h, w = working_shape[0], working_shape[1]
        return Region(
            max(0, math.floor(region.y0 / f)),
            max(0, math.floor(region.x0 / f)),
            min(h, math.ceil(region.y1 / f)),
            min(w, math.ceil(region.x1 / f)),
        )


def choose_level(
    level_mpps: Sequence[float], target_mpp: float, *, tolerance: float = 0.1
) -> LevelChoice:
    """Pick the pyramid level for a model's working resolution.

    Parameters
    ----------
    level_mpps : sequence of float
        Pixel size of every level (level 0 first, increasing), e.g. level-0 MPP times each
        level's downsample factor.
    target_mpp : float
        The model's working pixel size, same unit.
    tolerance : float
        Relative difference up to which a level is used as it is (0.1 = 10 %).

    Returns
    -------
    LevelChoice
        The coarsest level whose pixel size is at most ``target_mpp * (1 + tolerance)``
        (level 0 if none is, which then needs upsampling), and the resampling factor.
    """
    mpps = [float(m) for m in level_mpps]
    if not mpps or min(mpps) <= 0 or not all(math.isfinite(m) for m in mpps):
        raise EngineError(f"level pixel sizes must be positive numbers, got {list(level_mpps)}")
    if not (target_mpp > 0 and math.isfinite(target_mpp)):
        raise EngineError(f"the target pixel size must be a positive number, got {target_mpp}")
    fine_enough = [i for i, m in enumerate(mpps) if m <= target_mpp * (1 + tolerance)]
    level = max(fine_enough, key=lambda i: mpps[i]) if fine_enough else int(np.argmin(mpps))
    residual = target_mpp / mpps[level]
    factor = 1.0 if abs(residual - 1) <= tolerance else residual
    return LevelChoice(level, mpps[level], mpps[0], float(target_mpp), factor)


class ResampledArray:
    """A lazy ``"yx"`` / ``"yxc"`` view of an array resampled by ``factor``.

    Working pixel ``i`` is centred on source coordinate ``(i + 0.5) * factor - 0.5``. When
    downsampling, the source is first smoothed with a Gaussian of sigma ``(factor - 1) / 2``
    (as :func:`skimage.transform.resize` does), then interpolated linearly. Slicing reads
    only the source pixels the slice needs (plus a margin), so each output pixel is the same
    whichever slice computes it and tiles stitch without seams.

    Parameters
    ----------
    array : array-like
        Dask or numpy source with axes ``"yx"`` or ``"yxc"``.
    factor : float
        Working pixel size / source pixel size (> 1 shrinks).
    """

    def __init__(self, array: Any, factor: float) -> None:
        if not factor > 0:
            raise EngineError(f"resampling factor must be positive, got {factor}")
        if array.ndim not in (2, 3):
            raise EngineError(f"can only resample 'yx' or 'yxc' arrays, got shape {array.shape}")
        self.source = array
        self.factor = float(factor)
        h, w = array.shape[:2]
        self.shape = (max(1, round(h / factor)), max(1, round(w / factor)), *tuple(array.shape[2:]))
        self.ndim = array.ndim
        self.dtype = np.dtype(np.float32)
        self.sigma = max(0.0, (self.factor - 1) / 2)
        self.margin = math.ceil(4 * self.sigma) + 2

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = (k.indices(n) for k, n in zip(key, self.shape[:2], strict=True))
        if ys[2] != 1 or xs[2] != 1:
            raise EngineError("ResampledArray supports plain slices only (step 1)")
        cy = (np.arange(ys[0], ys[1]) + 0.5) * self.factor - 0.5
        cx = (np.arange(xs[0], xs[1]) + 0.5) * self.factor - 0.5
        if cy.size == 0 or cx.size == 0:
            return np.zeros((cy.size, cx.size, *self.shape[2:]), np.float32)
        y0, x0 = math.floor(cy[0]) - self.margin, math.floor(cx[0]) - self.margin
        box = Region(
            y0, x0, math.ceil(cy[-1]) + self.margin + 1, math.ceil(cx[-1]) + self.margin + 1
        )
        src = read_window(self.source, box).astype(np.float32)
        if src.ndim == 2:
            return self._resample_plane(src, cy - y0, cx - x0)
        planes = [self._resample_plane(src[..., c], cy - y0, cx - x0) for c in range(src.shape[2])]
        return np.stack(planes, axis=-1)

    def _resample_plane(self, plane: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
        if self.sigma > 0:
            plane = ndimage.gaussian_filter(plane, self.sigma, mode="reflect")
        grid = np.meshgrid(cy, cx, indexing="ij")
        return ndimage.map_coordinates(plane, grid, order=1, mode="reflect").astype(np.float32)

    def __repr__(self) -> str:
        return f"ResampledArray(shape={self.shape}, factor={self.factor:g})"


def pyramid_shapes(shape: tuple[int, int], chunk: int, min_side: int) -> list[tuple[int, int]]:
    """Shapes of a result pyramid, each exactly half the one below (level 0 padded to make
    that so): the levels of a live result store and of a label store.

    Levels are halved until the longest side is at most ``max(min_side, chunk)``, and there
    are always at least two: napari cannot show a one-level multiscale labels layer (its
    ``guess_multiscale`` unwraps a one-element list, and the layer fails to build), nor switch
    a multiscale layer's data to one level, which a small grid (a slide analysed at a coarse
    working resolution) would otherwise need.

    Parameters
    ----------
    shape : (int, int)
        (height, width) of level 0 before padding.
    chunk, min_side : int
        The chunk edge and the longest side at which halving may stop.

    Returns
    -------
    list of (int, int)
        The shapes, finest first.
    """
    n = 2
    while max(shape) / 2 ** (n - 1) > max(min_side, chunk):
        n += 1
    f = 2 ** (n - 1)
    h, w = math.ceil(shape[0] / f) * f, math.ceil(shape[1] / f) * f
    return [(h // 2**i, w // 2**i) for i in range(n)]
