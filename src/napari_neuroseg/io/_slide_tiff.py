"""tifffile backend of the slide reader: SVS, NDPI, SCN, BIF, OME-TIFF and generic tiled TIFF.

Each pyramid level becomes a dask array whose chunks are the file's own tiles (or strips).
A chunk is read by seeking to the tile's offset under the file handle's lock and decoding it
with the page's tifffile decoder outside the lock, so several threads decode in parallel.
This goes to tifffile's page decoder directly instead of through ``ZarrTiffStore`` + zarr:
zarr 3 hands every chunk to its event-loop thread (about 0.5 ms per tile, one tile decoded at
a time), and ``da.from_zarr`` makes each compute walk all chunk keys of the level, which
grows with slide size (see ``docs/readers-slides.md`` and ``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ._slide_common import OpenedSlide, file_key, level_array, plausible_mpp, slice_bounds
from ._slide_tiff_meta import objective_power, ome_mpp, resolution_mpp, slide_format
from ._types import ReaderError

SVS_MPP = re.compile(r"\bMPP\s*=\s*([0-9.eE+-]+)")
ASSOCIATED_SERIES = {"thumbnail", "label", "macro", "overview", "map"}
#: Aperio's "JPEG 2000 YCbCr" tiles need a colour conversion tifffile does not do.
TIFFFILE_UNSUPPORTED_COMPRESSIONS = {33003: "Aperio JPEG 2000 YCbCr"}
#: A strip larger than this (decoded) is too big to be one lazily read chunk.
MAX_STRIP_BYTES = 64 * 2**20
#: Missing (sparse) tiles are shown as white, like an unscanned slide area.
MISSING_TILE_VALUE = 255
MEMMAP_CHUNK = 512


class TifffileUnsupported(ReaderError):
    """The file is not one tifffile can read as an RGB slide; openslide may still manage."""


class TiffLevelReader:
    """Array-like over one tiled or stripped TIFF page that decodes only the tiles asked for.

    Parameters
    ----------
    path : pathlib.Path
        The file (for error messages).
    page : tifffile.TiffPage
        The page of this level; its ``TiffFile`` must stay open while this reader is used.
    level : int
        Level number (for error messages).
    """

    def __init__(self, path: Path, page: tifffile.TiffPage, level: int) -> None:
        self.path = path
        self.level = level
        self._page = page
        self._fh = page.parent.filehandle
        self._fh.set_lock(True)
        page.init_decode()
        self._offsets = page.dataoffsets
        self._counts = page.databytecounts
        self._jpegtables = page.jpegtables
        self._jpegheader = page.jpegheader
        self.chunk_shape: tuple[int, int] = (int(page.chunks[0]), int(page.chunks[1]))
        self._samples = int(page.samplesperpixel)
        self._across = math.ceil(page.imagewidth / self.chunk_shape[1])
        self.shape = (int(page.imagelength), int(page.imagewidth), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __reduce__(self) -> tuple[Any, tuple[Path, int]]:
        """Pickle as (path, level) and reopen the file on unpickling (for process workers)."""
        return reopen_tiff_level, (self.path, self.level)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Decode the tiles covering ``key`` (slices along y and x) and return that region."""
        y0, y1, x0, x1, channels = slice_bounds(key, self.shape)
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=self.dtype)
        th, tw = self.chunk_shape
        for ty in range(y0 // th, -(-y1 // th)):
            for tx in range(x0 // tw, -(-x1 // tw)):
                top, left = max(y0, ty * th), max(x0, tx * tw)
                bottom, right = min(y1, (ty + 1) * th), min(x1, (tx + 1) * tw)
                target = out[top - y0 : bottom - y0, left - x0 : right - x0]
                tile = self.read_tile(ty * self._across + tx)
                if tile is None:
                    target[...] = MISSING_TILE_VALUE
                    continue
                tile_y, tile_x = top - ty * th, left - tx * tw
                target[...] = tile[
                    tile_y : tile_y + bottom - top, tile_x : tile_x + right - left, :3
                ]
        return out[:, :, channels]

    def read_tile(self, index: int) -> np.ndarray | None:
        """Decode tile (or strip) ``index`` at full tile size; ``None`` for a missing tile."""
        offset, count = self._offsets[index], self._counts[index]
        if not offset or not count:
            return None
        with self._fh.lock:
            self._fh.seek(offset)
            data = self._fh.read(count)
        if len(data) != count:
            raise ReaderError(self.path, f"tile {index} of level {self.level} is cut off")
        try:
            decoded = self._page.decode(
                data,
                index,
                jpegtables=self._jpegtables,
                jpegheader=self._jpegheader,
                _fullsize=True,
            )[0]
        except Exception as exc:
            raise ReaderError(
                self.path, f"cannot decode tile {index} of level {self.level}: {exc}"
            ) from exc
        return decoded.reshape((*self.chunk_shape, self._samples))


def reopen_tiff_level(path: Path, level: int) -> TiffLevelReader:
    """Open ``path`` again and return the reader of ``level`` of its main series."""
    tif = tifffile.TiffFile(path)
    return TiffLevelReader(path, _main_series(path, tif).levels[level].keyframe, level)


def open_with_tifffile(path: Path) -> OpenedSlide:
    """Open ``path`` with tifffile and describe its main image series.

    Raises
    ------
    TifffileUnsupported
        Not a TIFF, or a TIFF whose image tifffile cannot decode as RGB (openslide may).
    ReaderError
        Truncated or corrupt files, and TIFFs that are not RGB slides.
    """
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise TifffileUnsupported(path, f"not a TIFF file tifffile can read ({exc})") from exc
    try:
        return _describe(path, tif)
    except BaseException:
        tif.close()
        raise


def _describe(path: Path, tif: tifffile.TiffFile) -> OpenedSlide:
    series = _main_series(path, tif)
    pages = _level_pages(path, series)
    file_size = tif.filehandle.size
    key = file_key(path)
    levels, readers = [], []
    tile_size: tuple[int, int] | None = None
    for number, page in enumerate(pages):
        _check_page(path, page, number, file_size)
        if page.is_tiled or _strip_bytes(page) <= MAX_STRIP_BYTES:
            reader: Any = TiffLevelReader(path, page, number)
            chunks = reader.chunk_shape
        elif page.is_contiguous:
            reader, chunks = _memmap_reader(path, page), (MEMMAP_CHUNK, MEMMAP_CHUNK)
        else:
            raise ReaderError(
                path,
                f"level {number} is stored in strips of {_strip_bytes(page) / 2**20:.0f} MiB, "
                "too large to read lazily; convert it to a tiled pyramidal TIFF",
            )
        levels.append(level_array(reader, chunks, (*key, "tifffile", number)))
        readers.append(reader)
        tile_size = tile_size or chunks
    vendor, fmt = slide_format(tif)
    mpp, source, notes = _file_mpp(path, tif, series, pages[0])
    return OpenedSlide(
        levels=levels,
        readers=readers,
        backend="tifffile",
        vendor=vendor,
        format=fmt,
        tile_size=tile_size or (0, 0),
        mpp=mpp,
        mpp_source=source,
        objective_power=objective_power(tif, pages[0]),
        notes=notes,
        extra={"series": series.name or "", "compression": _compression_name(pages[0])},
    )


def _main_series(path: Path, tif: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    """The whole-slide image series: SVS 'Baseline', else the largest non-associated series."""
    candidates = []
    for series in tif.series:
        name = (series.name or "").strip().lower()
        if name == "baseline":
            return series
        if name not in ASSOCIATED_SERIES:
            candidates.append(series)
    if not candidates:
        raise ReaderError(path, "has no image besides thumbnail, label or macro images")
    return max(candidates, key=lambda s: math.prod(s.shape))


def _level_pages(path: Path, series: tifffile.TiffPageSeries) -> list[tifffile.TiffPage]:
    """One page per pyramid level, each smaller than the one before."""
    pages: list[tifffile.TiffPage] = []
    for number, level in enumerate(series.levels):
        page = level.keyframe
        if page is None:
            break
        _check_rgb(path, page, number)
        if len(level.pages) != 1:
            raise ReaderError(
                path,
                f"series {series.name!r} has {len(level.pages)} planes per level "
                f"(shape {series.shape}, axes {series.axes}); only 2-D RGB slides are supported",
            )
        if pages and not (
            page.imagelength < pages[-1].imagelength and page.imagewidth < pages[-1].imagewidth
        ):
            break
        pages.append(page)
    if not pages:
        raise ReaderError(path, f"series {series.name!r} has no readable image page")
    return pages


def _check_rgb(path: Path, page: tifffile.TiffPage, number: int) -> None:
    rgb = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    if page.samplesperpixel not in (3, 4) or not rgb:
        raise ReaderError(
            path,
            f"is not an RGB slide (level {number}: {page.samplesperpixel} samples per pixel, "
            f"photometric {page.photometric.name}); open it as an image stack instead",
        )


def _check_page(path: Path, page: tifffile.TiffPage, number: int, file_size: int) -> None:
    """Refuse pages tifffile cannot decode as 8-bit RGB or whose data lie beyond the file end."""
    if page.dtype != np.uint8 or page.planarconfig != tifffile.PLANARCONFIG.CONTIG:
        raise TifffileUnsupported(
            path, f"level {number} is {page.dtype} with planar configuration {page.planarconfig}"
        )
    if page.compression in TIFFFILE_UNSUPPORTED_COMPRESSIONS:
        name = TIFFFILE_UNSUPPORTED_COMPRESSIONS[page.compression]
        raise TifffileUnsupported(path, f"has {name} tiles that tifffile does not convert")
    if page.decode.__name__.startswith("decode_raise"):
        raise TifffileUnsupported(
            path, f"level {number} uses {_compression_name(page)} that tifffile cannot decode"
        )
    if _data_end(page) > file_size:
        raise ReaderError(
            path,
            f"is truncated or corrupt: level {number} has image data beyond the end of the "
            f"file ({file_size} bytes)",
        )


def _data_end(page: tifffile.TiffPage) -> int:
    """Where the page's first and last tiles end in the file (0 without data).

    Writers store a level's tiles in order, so a file cut short loses the last tile of some
    level; checking two tiles per level keeps opening independent of the tile count. Tiles
    stored out of order or with corrupt byte counts are still caught, with the file named,
    when they are read (:meth:`TiffLevelReader.read_tile`).
    """
    offsets, counts = page.dataoffsets, page.databytecounts
    if not offsets:
        return 0
    return max(int(offsets[i]) + int(counts[i]) if offsets[i] else 0 for i in (0, -1))


def _strip_bytes(page: tifffile.TiffPage) -> int:
    return int(page.chunks[0]) * int(page.imagewidth) * int(page.samplesperpixel)


def _memmap_reader(path: Path, page: tifffile.TiffPage) -> np.ndarray:
    """A lazily memory-mapped RGB view of an uncompressed single-strip level."""
    shape = (int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel))
    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=page.dataoffsets[0], shape=shape)
    return mapped[:, :, :3]


def _file_mpp(
    path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, page: tifffile.TiffPage
) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """MPP (y, x) in um and where it came from: SVS description, OME, then TIFF resolution."""
    notes: list[str] = []
    if tif.is_svs:
        match = SVS_MPP.search(page.description or "")
        if match and plausible_mpp(_float(match.group(1))):
            value = float(match.group(1))
            return (value, value), "Aperio ImageDescription MPP", notes
    if tif.is_ome:
        index = next((i for i, s in enumerate(tif.series) if s is series), 0)
        mpp, note = ome_mpp(tif.ome_metadata or "", index)
        if note:
            notes.append(note)
        if mpp is not None:
            return mpp, "OME PhysicalSizeX/Y", notes
    mpp, note = resolution_mpp(page)
    if note:
        notes.append(note)
    if mpp is not None:
        return mpp, "TIFF XResolution/YResolution", notes
    return None, None, notes


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compression_name(page: tifffile.TiffPage) -> str:
    compression = page.compression
    return getattr(compression, "name", str(compression))
