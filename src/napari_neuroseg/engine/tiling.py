"""Tiles, halos and cores: how an image is cut into network inputs.

Along each axis the image is covered by a grid anchored at pixel 0 with step ``stride =
patch - 2 * halo - overlap``. Tile ``i`` owns the *core* ``[i * stride, (i + 1) * stride)``;
its *window* (the output it contributes) is the core widened by ``overlap`` (half on each
side); the patch the network sees is the window widened by ``halo`` context pixels on each
side. Pixels outside the image are read by reflection (numpy's ``"reflect"`` mode), so a
patch is always ``patch_size`` pixels, however small the image.

Because the grid is anchored at the image origin, a tile's identity ``(z, row, col)`` does
not depend on the region requested, which is what makes cached tiles reusable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_neuroseg.engine.direct import Box, load_boxes
from napari_neuroseg.engine.errors import EngineError


@dataclass(frozen=True)
class Region:
    """A rectangle of image pixels, ``[y0, y1) x [x0, x1)``.

    Parameters
    ----------
    y0, x0 : int
        First row and column (inclusive).
    y1, x1 : int
        End row and column (exclusive).
    """

    y0: int
    x0: int
    y1: int
    x1: int

    @classmethod
    def from_slices(cls, ys: slice, xs: slice) -> Region:
        """Region from two slices with explicit start and stop."""
        if ys.start is None or ys.stop is None or xs.start is None or xs.stop is None:
            raise EngineError(f"region slices need explicit starts and stops, got {ys}, {xs}")
        if ys.step not in (None, 1) or xs.step not in (None, 1):
            raise EngineError(f"region slices cannot have a step, got {ys}, {xs}")
        return cls(int(ys.start), int(xs.start), int(ys.stop), int(xs.stop))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def start(self) -> tuple[int, int]:
        """(y0, x0)."""
        return (self.y0, self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))``."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    @property
    def center(self) -> tuple[float, float]:
        """Centre in pixel coordinates."""
        return ((self.y0 + self.y1 - 1) / 2, (self.x0 + self.x1 - 1) / 2)

    def intersects(self, other: Region) -> bool:
        """Whether the two rectangles share at least one pixel."""
        return (
            self.y0 < other.y1 and other.y0 < self.y1 and self.x0 < other.x1 and other.x0 < self.x1
        )

    def __str__(self) -> str:
        return f"y {self.y0}:{self.y1}, x {self.x0}:{self.x1}"


def coerce_region(region: Region | tuple[slice, slice] | None, shape: Sequence[int]) -> Region:
    """Check a requested region against an image's (height, width).

    Parameters
    ----------
    region : Region, tuple of two slices, or None
        ``None`` means the whole image.
    shape : sequence of int
        Image height and width.

    Returns
    -------
    Region

    Raises
    ------
    EngineError
        When the region is empty or not inside the image.
    """
    h, w = int(shape[0]), int(shape[1])
    if region is None:
        return Region(0, 0, h, w)
    if not isinstance(region, Region):
        if len(region) != 2:
            raise EngineError(f"a region is a Region or two slices (y, x), got {region!r}")
        region = Region.from_slices(*region)
    if region.y1 <= region.y0 or region.x1 <= region.x0:
        raise EngineError(f"region {region} is empty")
    if region.y0 < 0 or region.x0 < 0 or region.y1 > h or region.x1 > w:
        raise EngineError(f"region {region} lies outside the image of height {h} and width {w}")
    return region


@dataclass(frozen=True)
class Tile:
    """One network input and the part of the output it owns.

    Parameters
    ----------
    row, col : int
        Grid index (the grid is anchored at image pixel (0, 0)).
    core : Region
        The pixels this tile owns in the partition of the image (``blend="none"`` writes these).
    window : Region
        The core widened by the overlap: what a blended tile writes.
    read : Region
        The window widened by the halo: the patch fed to the predictor. May extend beyond the
        image (read by reflection).
    z : int or None
        Plane index for volumes processed slice by slice.
    """

    row: int
    col: int
    core: Region
    window: Region
    read: Region
    z: int | None = None

    @property
    def key(self) -> tuple[int | None, int, int]:
        """``(z, row, col)``: the tile's identity on its grid."""
        return (self.z, self.row, self.col)

    def describe(self) -> str:
        """Human-readable name, e.g. ``"tile (row 2, col 5) at y 512:768, x 1280:1536"``."""
        plane = "" if self.z is None else f" of plane z={self.z}"
        return f"tile (row {self.row}, col {self.col}){plane} at {self.core}"


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    if len(value) != 2:
        raise EngineError(f"{name} must be one int or (height, width), got {value!r}")
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class TileGrid:
    """The tile grid of one 2D image.

    Parameters
    ----------
    image_shape : tuple of int
        (height, width) of the image (the pixels being predicted, not the patch).
    patch_size : int or (int, int)
        Network input size, halo included.
    halo : int
        Context pixels on each side of the window that are read but never written.
    overlap : int
        How much neighbouring windows overlap (blended there). 0 = windows are the cores.
    """

    image_shape: tuple[int, int]
    patch_size: tuple[int, int]
    halo: int = 0
    overlap: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", _pair(self.image_shape, "image_shape"))
        object.__setattr__(self, "patch_size", _pair(self.patch_size, "patch_size"))
        if min(self.image_shape) < 1:
            raise EngineError(f"cannot tile an empty image of shape {self.image_shape}")
        if self.halo < 0 or self.overlap < 0:
            raise EngineError(f"halo ({self.halo}) and overlap ({self.overlap}) must be >= 0")
        if min(self.stride) < 1:
            raise EngineError(
                f"patch_size {self.patch_size} leaves no core: it must exceed "
                f"2 * halo + overlap = {2 * self.halo + self.overlap}"
            )

    @property
    def stride(self) -> tuple[int, int]:
        """Core size = distance between neighbouring tiles."""
        extra = 2 * self.halo + self.overlap
        return (self.patch_size[0] - extra, self.patch_size[1] - extra)

    @property
    def n_tiles(self) -> tuple[int, int]:
        """Number of tile rows and columns covering the image."""
        (h, w), (sy, sx) = self.image_shape, self.stride
        return (-(-h // sy), -(-w // sx))

    def key(self) -> tuple[int, ...]:
        """Geometry as a tuple, for cache keys (tiles of different grids never match)."""
        return (*self.patch_size, self.halo, self.overlap)

    def tile(self, row: int, col: int, z: int | None = None) -> Tile:
        """The tile at grid index (row, col)."""
        (sy, sx), ov, halo = self.stride, self.overlap, self.halo
        before, after = ov // 2, ov - ov // 2
        core = Region(row * sy, col * sx, (row + 1) * sy, (col + 1) * sx)
        window = Region(core.y0 - before, core.x0 - before, core.y1 + after, core.x1 + after)
        read = Region(window.y0 - halo, window.x0 - halo, window.y1 + halo, window.x1 + halo)
        return Tile(row, col, core, window, read, z)

    def tiles_in(self, region: Region, *, blended: bool, z: int | None = None) -> list[Tile]:
        """Tiles needed for every pixel of ``region``, in raster order.

        Parameters
        ----------
        region : Region
            Pixels to predict (inside the image).
        blended : bool
            True: every tile whose window touches the region (all contributions to a blended
            pixel). False: every tile whose core touches it.
        z : int, optional
            Plane index stored in the tiles.
        """
        before, after = (self.overlap // 2, self.overlap - self.overlap // 2) if blended else (0, 0)
        rows, cols = (
            range(max(0, (lo - after) // step - 1), min(n, (hi + before) // step + 1))
            for lo, hi, step, n in zip(
                region.start, (region.y1, region.x1), self.stride, self.n_tiles, strict=True
            )
        )
        tiles = (self.tile(r, c, z) for r in rows for c in cols)
        if blended:
            return [t for t in tiles if t.window.intersects(region)]
        return [t for t in tiles if t.core.intersects(region)]


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` mapped into ``[0, size)`` by reflection.

    Matches ``np.pad(..., mode="reflect")`` for any pad width, including images of one pixel
    (which repeat that pixel).
    """
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx > size - 1, period - idx, idx)


def _box(shape: Sequence[int], read: Region) -> tuple[Box, np.ndarray | None, np.ndarray | None]:
    """The in-image box to load for ``read`` and the index maps that reflect it into place."""
    h, w = int(shape[0]), int(shape[1])
    if read.y0 >= 0 and read.x0 >= 0 and read.y1 <= h and read.x1 <= w:
        return read.slices, None, None
    iy = reflect_indices(read.y0, read.y1, h)
    ix = reflect_indices(read.x0, read.x1, w)
    y_lo, x_lo = int(iy.min()), int(ix.min())
    box = (slice(y_lo, int(iy.max()) + 1), slice(x_lo, int(ix.max()) + 1))
    return box, iy - y_lo, ix - x_lo


def _reflect(data: np.ndarray, iy: np.ndarray | None, ix: np.ndarray | None) -> np.ndarray:
    # two 1-D takes: about 3x faster than one 2-D fancy index over (y, x)
    return data if iy is None else np.asarray(data).take(iy, axis=0).take(ix, axis=1)


def read_patches(array: Any, tiles: Sequence[Tile]) -> list[np.ndarray]:
    """Read every tile's patch (``tile.read``), reflecting where it leaves the image.

    Parameters
    ----------
    array : array-like
        Dask or numpy array with axes ``"yx"`` or ``"yxc"``; any object with ``shape`` and
        basic slicing that returns an array works. Only the tiles' boxes are read: straight
        from the reader behind a slide level (one call per box, no dask graph, see
        :mod:`napari_neuroseg.engine.direct`), else all in one ``dask.compute`` call for
        other dask arrays, else by slicing.
    tiles : sequence of Tile

    Returns
    -------
    list of numpy.ndarray
        One ``(patch_h, patch_w[, c])`` array per tile, in the array's dtype.

    Notes
    -----
    Safe to call from a second thread (a prefetching reader) while napari reads the same
    slide, as long as the array's reader is: the slide readers are.
    """
    boxes = [_box(array.shape, t.read) for t in tiles]
    loaded = load_boxes(array, [b[0] for b in boxes])
    return [_reflect(data, iy, ix) for data, (_, iy, ix) in zip(loaded, boxes, strict=True)]


def read_window(array: Any, window: Region) -> np.ndarray:
    """Read one window of a ``"yx"`` / ``"yxc"`` array, reflecting where it leaves the image.

    The window is read like a tile of :func:`read_patches` (directly from a slide level's
    reader when there is one).
    """
    box, iy, ix = _box(array.shape, window)
    return _reflect(load_boxes(array, [box])[0], iy, ix)
