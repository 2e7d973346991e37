"""openslide backend of the slide reader (MIRAX, VMS/VMU and anything tifffile cannot read).

Each level is a dask array whose chunks are openslide's tile size for that level; a chunk is
one ``read_region`` call, alpha-composited on white. OpenSlide objects are thread-safe, so
chunks can be read from several threads.

A level whose downsample is not a whole number (2.0005 in many Aperio files) starts each read
at a level-0 position that falls between its pixels, so openslide shifts the result by a
fraction of a pixel that depends on where the read starts. Such levels are therefore always
read chunk by chunk on their chunk grid and cropped: a pixel has the same value whichever
region asks for it (the tile engine's direct reads and napari's chunks agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._slide_common import OpenedSlide, file_key, level_array, plausible_mpp, slice_bounds
from ._types import ReaderError

DEFAULT_TILE = 512


class OpenSlideLevelReader:
    """Array-like over one openslide level that reads only the requested region.

    Parameters
    ----------
    path : pathlib.Path
        The file (for error messages).
    slide : openslide.OpenSlide
        The open slide; kept alive by this reader.
    level : int
        Level number in openslide's pyramid.
    chunk_shape : (int, int), optional
        The chunk grid (y, x) of the level's dask array. A level with a fractional downsample
        is read on this grid (see the module notes); without it, as asked.
    """

    def __init__(
        self, path: Path, slide: Any, level: int, chunk_shape: tuple[int, int] | None = None
    ) -> None:
        self.path = path
        self.level = level
        self._slide = slide
        self._downsample = float(slide.level_downsamples[level])
        width, height = slide.level_dimensions[level]
        self.shape = (int(height), int(width), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.chunk_shape = chunk_shape
        whole = self._downsample == round(self._downsample)
        self._grid = None if whole or chunk_shape is None else chunk_shape

    def __reduce__(self) -> tuple[Any, tuple[Path, int, tuple[int, int] | None]]:
        """Pickle as (path, level) and reopen the slide on unpickling (for process workers)."""
        return reopen_openslide_level, (self.path, self.level, self.chunk_shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read the region ``key`` (slices along y and x) of this level as RGB on white."""
        y0, y1, x0, x1, channels = slice_bounds(key, self.shape)
        if y1 <= y0 or x1 <= x0:
            return np.empty((y1 - y0, x1 - x0, 3), dtype=self.dtype)[:, :, channels]
        if self._grid is None:
            return self._read(y0, x0, y1 - y0, x1 - x0)[:, :, channels]
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=self.dtype)
        (th, tw), (height, width) = self._grid, self.shape[:2]
        for top in range(y0 // th * th, y1, th):
            for left in range(x0 // tw * tw, x1, tw):
                chunk = self._read(top, left, min(th, height - top), min(tw, width - left))
                ya, yb = max(y0, top), min(y1, top + th)
                xa, xb = max(x0, left), min(x1, left + tw)
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = chunk[
                    ya - top : yb - top, xa - left : xb - left
                ]
        return out[:, :, channels]

    def _read(self, y0: int, x0: int, height: int, width: int) -> np.ndarray:
        location = (round(x0 * self._downsample), round(y0 * self._downsample))
        try:
            region = self._slide.read_region(location, self.level, (width, height))
        except Exception as exc:
            raise ReaderError(
                self.path, f"openslide cannot read level {self.level} at {location}: {exc}"
            ) from exc
        return composite_on_white(np.asarray(region))


def reopen_openslide_level(
    path: Path, level: int, chunk_shape: tuple[int, int] | None = None
) -> OpenSlideLevelReader:
    """Open ``path`` again with openslide and return the reader of ``level``."""
    import openslide

    return OpenSlideLevelReader(path, openslide.OpenSlide(str(path)), level, chunk_shape)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend an ``(h, w, 4)`` uint8 RGBA image (straight alpha) onto white; returns RGB."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def open_with_openslide(path: Path) -> OpenedSlide:
    """Open ``path`` with openslide and describe its pyramid.

    Raises
    ------
    ReaderError
        openslide does not support the file or cannot open it.
    """
    import openslide

    try:
        slide = openslide.OpenSlide(str(path))
    except Exception as exc:
        raise ReaderError(path, f"openslide cannot open it ({exc})") from exc
    props = dict(slide.properties)
    key = file_key(path)
    levels, readers, tiles = [], [], []
    for level in range(slide.level_count):
        tile = _tile_size(props, level)
        tiles.append(tile)
        readers.append(OpenSlideLevelReader(path, slide, level, tile))
        levels.append(level_array(readers[-1], tile, (*key, "openslide", level)))
    mpp = _property_mpp(props)
    vendor = props.get("openslide.vendor", "unknown")
    return OpenedSlide(
        levels=levels,
        readers=readers,
        backend="openslide",
        vendor=vendor,
        format=vendor,
        tile_size=tiles[0],
        mpp=mpp,
        mpp_source="openslide.mpp-x/y" if mpp else None,
        objective_power=_float(props.get("openslide.objective-power")),
        extra={"openslide_level_downsamples": [float(d) for d in slide.level_downsamples]},
    )


def _tile_size(props: dict[str, str], level: int) -> tuple[int, int]:
    """openslide's advertised tile size of ``level`` (y, x), else a default."""
    height = _float(props.get(f"openslide.level[{level}].tile-height"))
    width = _float(props.get(f"openslide.level[{level}].tile-width"))
    if height and width:
        return int(height), int(width)
    return DEFAULT_TILE, DEFAULT_TILE


def _property_mpp(props: dict[str, str]) -> tuple[float, float] | None:
    mpp_x = _float(props.get("openslide.mpp-x"))
    mpp_y = _float(props.get("openslide.mpp-y"))
    if plausible_mpp(mpp_x) and plausible_mpp(mpp_y):
        return (float(mpp_y), float(mpp_x))  # type: ignore[arg-type]
    return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
