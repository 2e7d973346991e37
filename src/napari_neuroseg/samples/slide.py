"""Synthetic H&E-like whole-slide pyramids for tests, npe2 sample data and the demo.

The image is procedural: every pixel is a function of its level-0 position and the seed, so
any tile of any level can be generated on its own. Tiles are generated and handed to tifffile
one at a time; the whole image is never in memory. Contents: pink eosin stroma with fibre
texture, purple hematoxylin nuclei whose density varies across the tissue, white holes
(vessels, fat, tears) and white background around an irregular tissue outline, so tissue
detection has something to find. Synthetic data, not a real slide.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import tifffile

from napari_neuroseg.io._atomic import atomic_path
from napari_neuroseg.samples._slide_texture import he_region

__all__ = ["SAMPLE_SLIDE_NAME", "make_sample_slide", "write_synthetic_slide"]

Layout = Literal["pages", "subifd", "ome"]
Compression = Literal["jpeg", "zlib"] | None
SAMPLE_SLIDE_NAME = "neuroseg-synthetic-he.tif"
SAMPLE_SLIDE_SIZE = (4096, 4096)
#: Without an explicit level count, levels are halved until the long side is at most this.
SMALLEST_LEVEL = 1024
JPEG_QUALITY = 90
#: Distinct tissue tiles per level in ``fast`` mode (plus one background tile).
FAST_VARIANTS = 12


class _Level(NamedTuple):
    """One pyramid level being written: its shape, the level-0 size, the downsample factor,
    the tile side and the texture's seed."""

    shape: tuple[int, int]
    size: tuple[int, int]
    downsample: int
    tile: int
    seed: int


def write_synthetic_slide(
    path: str | Path,
    *,
    size: tuple[int, int] = (4096, 4096),
    tile: int = 256,
    mpp: float | None = 0.5,
    layout: Layout = "pages",
    levels: int | None = None,
    compression: Compression = "jpeg",
    seed: int = 0,
    fast: bool = False,
) -> Path:
    """Write a synthetic H&E-like RGB slide as a tiled pyramidal TIFF.

    Parameters
    ----------
    path : str or pathlib.Path
        Output file; written to a temporary name in the same folder, then renamed.
    size : (int, int), optional
        Level-0 size as ``(height, width)`` in pixels.
    tile : int, optional
        Tile edge in pixels (a multiple of 16).
    mpp : float or None, optional
        Level-0 pixel size in um/px, written as resolution tags in centimetres (and as OME
        ``PhysicalSizeX/Y`` for ``layout="ome"``). ``None`` writes no pixel size.
    layout : {"pages", "subifd", "ome"}, optional
        ``"pages"``: every level is a top-level tiled page, reduced levels with
        ``subfiletype=1`` (openslide reads it as a multi-level generic TIFF). ``"subifd"``:
        reduced levels in SubIFDs of the first page. ``"ome"``: OME-TIFF with SubIFDs.
    levels : int, optional
        Number of levels, each half the size of the one before (``floor``). By default,
        halve until the long side is at most 1024 pixels.
    compression : {"jpeg", "zlib", None}, optional
        Tile compression (JPEG quality 90; zlib is lossless).
    seed : int, optional
        Seed of the procedural texture; the same seed gives the same image.
    fast : bool, optional
        Encode a dozen distinct tiles per level once and repeat their bytes (repetitive
        content, for huge benchmark slides: 50k x 50k is written in seconds).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    shapes = _level_shapes(size, levels)
    _check_arguments(tile, layout, compression, mpp)
    options = _page_options(tile, compression)
    big = 3 * size[0] * size[1] > 2**31
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big, ome=layout == "ome") as tw:
        for number, shape in enumerate(shapes):
            downsample = 2**number
            level = _Level(shape, size, downsample, tile, seed)
            tw.write(
                _repeated_tiles(level, options) if fast else _texture_tiles(level),
                shape=(*shape, 3),
                dtype=np.uint8,
                **options,
                **_level_tags(number, len(shapes), layout, mpp, downsample),
            )
    return path


def make_sample_slide(directory: str | Path) -> Path:
    """Write the ~4096 x 4096 synthetic H&E sample slide into ``directory`` once.

    Parameters
    ----------
    directory : str or pathlib.Path
        Folder to write to (created if needed). An existing, readable sample is reused.

    Returns
    -------
    pathlib.Path
        Path of the sample slide (a JPEG tiled pyramid, 0.5 um/px, ``layout="pages"``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SAMPLE_SLIDE_NAME
    if not _is_complete_sample(path):
        write_synthetic_slide(path, size=SAMPLE_SLIDE_SIZE, mpp=0.5, layout="pages")
    return path


def _is_complete_sample(path: Path) -> bool:
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages.first.shape == (*SAMPLE_SLIDE_SIZE, 3)
    except Exception:
        return False


def _level_shapes(size: tuple[int, int], levels: int | None) -> list[tuple[int, int]]:
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    if levels is not None and levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    shapes = [(height, width)]
    while (len(shapes) < levels) if levels else max(shapes[-1]) > SMALLEST_LEVEL:
        h, w = shapes[-1]
        if min(h, w) < 2:
            break
        shapes.append((h // 2, w // 2))
    return shapes


def _check_arguments(tile: int, layout: str, compression: Compression, mpp: float | None) -> None:
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if layout not in ("pages", "subifd", "ome"):
        raise ValueError(f"layout must be 'pages', 'subifd' or 'ome', got {layout!r}")
    if compression not in ("jpeg", "zlib", None):
        raise ValueError(f"compression must be 'jpeg', 'zlib' or None, got {compression!r}")
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be positive or None, got {mpp}")


def _page_options(tile: int, compression: Compression) -> dict[str, Any]:
    options: dict[str, Any] = {"tile": (tile, tile), "photometric": "rgb"}
    if compression == "jpeg":
        options.update(compression="jpeg", compressionargs={"level": JPEG_QUALITY})
    elif compression == "zlib":
        options.update(compression="zlib")
    return options


def _level_tags(
    number: int, count: int, layout: str, mpp: float | None, downsample: int
) -> dict[str, Any]:
    """Per-level ``TiffWriter.write`` arguments: subfiletype, SubIFDs, resolution, metadata."""
    tags: dict[str, Any] = {"metadata": None}
    if number > 0:
        tags["subfiletype"] = 1
    elif layout != "pages" and count > 1:
        tags["subifds"] = count - 1
    if mpp is not None:
        per_cm = 1e4 / (mpp * downsample)
        tags.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    if layout == "ome" and number == 0:
        tags["metadata"] = {"axes": "YXS"}
        if mpp is not None:
            tags["metadata"].update(
                PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm"
            )
    return tags


def _texture_tiles(level: _Level) -> Iterator[np.ndarray]:
    """Every tile of one level, row by row, generated on demand."""
    tile = level.tile
    for y in range(0, level.shape[0], tile):
        for x in range(0, level.shape[1], tile):
            yield he_region(y, x, tile, tile, downsample=level.downsample, size=level.size,
                            seed=level.seed)


def _repeated_tiles(level: _Level, options: dict[str, Any]) -> Iterator[bytes]:
    """Encoded tiles of one level drawn from a few pre-encoded variants (fast mode).

    Tiles inside the central ellipse are tissue variants, the others plain background.
    """
    variants = _encode_variants(level, options)
    background, tissue = variants[0], variants[1:]
    rows, cols = -(-level.shape[0] // level.tile), -(-level.shape[1] // level.tile)
    for row in range(rows):
        for col in range(cols):
            dy = (row + 0.5) / rows - 0.5
            dx = (col + 0.5) / cols - 0.5
            inside = (dy / 0.45) ** 2 + (dx / 0.45) ** 2 <= 1.0
            yield tissue[(row * 7 + col * 3) % len(tissue)] if inside else background


def _encode_variants(level: _Level, options: dict[str, Any]) -> list[bytes]:
    """A background tile and ``FAST_VARIANTS`` tissue tiles, encoded like the slide's tiles."""
    size, downsample, tile, seed = level.size, level.downsample, level.tile, level.seed
    tiles = [np.full((tile, tile, 3), 242, dtype=np.uint8)]
    centre_y, centre_x = size[0] // (2 * downsample), size[1] // (2 * downsample)
    for k in range(FAST_VARIANTS):
        y = centre_y + (k % 4 - 2) * tile
        x = centre_x + (k // 4 - 1) * tile
        tiles.append(he_region(y, x, tile, tile, downsample=downsample, size=size, seed=seed))
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        writer.write(np.concatenate(tiles, axis=1), metadata=None, **options)
    buffer.seek(0)
    with tifffile.TiffFile(buffer) as tif:
        page = tif.pages.first
        if page.jpegtables is not None:
            raise RuntimeError("fast mode cannot reuse JPEG tiles that need shared tables")
        segments = tif.filehandle.read_segments(page.dataoffsets, page.databytecounts)
        by_index = {index: bytes(data) for data, index in segments}
    return [by_index[index] for index in range(len(tiles))]
