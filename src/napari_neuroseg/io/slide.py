"""Whole-slide images (Aperio SVS, Hamamatsu NDPI, MIRAX, OME-TIFF, tiled pyramidal TIFF),
and the smaller H&E images handled the same way: PNG/JPEG tiles and single RGB TIFF pictures.

:func:`read_slide` returns a :class:`~napari_neuroseg.io._types.LazyImage` whose ``levels``
are dask arrays, one per pyramid level, axes ``"yxc"`` (RGB uint8), chunked on the file's own
tiles. Opening reads metadata only; pixels are decoded when a chunk is computed. Slides with
too few levels get lazily computed 2x2-mean levels (:func:`~._pyramid.extend_pyramid`).

Backends: tifffile for every TIFF-based format it can decode (including SubIFD and OME
pyramids, which openslide sees as one level), openslide for MIRAX, VMS/VMU and TIFFs tifffile
cannot decode (such as Aperio JPEG 2000 YCbCr), Pillow for PNG and JPEG pictures.
See ``docs/readers-slides.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import tifffile

from ._pyramid import extend_pyramid
from ._slide_common import OpenedSlide
from ._slide_openslide import open_with_openslide
from ._slide_picture import PICTURE_SUFFIXES, is_rgb_picture, open_picture
from ._slide_tiff import TifffileUnsupported, open_with_tifffile
from ._types import LazyImage, ReaderError

__all__ = ["BACKENDS", "SLIDE_SUFFIXES", "is_slide_file", "read_slide"]

#: Vendor formats recognised by their suffix alone.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu")
#: Formats only openslide reads (not TIFF containers).
OPENSLIDE_ONLY_SUFFIXES = (".mrxs", ".vms", ".vmu")
TIFF_SUFFIXES = (".tif", ".tiff")
BACKENDS = ("auto", "tifffile", "openslide")
DEFAULT_MPP = 1.0
#: What the user can do about an unknown MPP (shown in napari, so it names the GUI's way).
MPP_HINT = (
    "Set the real value with 'MPP override' in Plugins > NeuroSeg > Open image, "
    "then open the file again from there."
)


def read_slide(
    path: str | Path,
    *,
    mpp: float | Sequence[float] | None = None,
    min_level_size: int = 2048,
    backend: str = "auto",
) -> LazyImage:
    """Open a whole-slide image lazily as a multiscale RGB image.

    Parameters
    ----------
    path : str or pathlib.Path
        The slide file (for MIRAX, the ``.mrxs`` file next to its data folder), or a PNG,
        JPEG or single-image RGB TIFF picture (an H&E tile or patch).
    mpp : float or (float, float), optional
        Pixel size in micrometres per pixel (one value, or ``(mpp_y, mpp_x)``). Overrides the
        file's value; use it when the file has none.
    min_level_size : int, optional
        Lower levels are computed (each a 2x2 mean of the one before) until the long side of
        the smallest level is at most this many pixels.
    backend : {"auto", "tifffile", "openslide"}, optional
        ``"auto"`` uses tifffile for TIFF-based files it can decode and openslide otherwise.

    Returns
    -------
    LazyImage
        ``levels`` full resolution first, axes ``"yxc"``, ``scale = (mpp_y, mpp_x)`` in um,
        ``display = {"rgb": True}``; ``metadata`` holds vendor, format, backend, level shapes,
        downsamples, tile size, native level count, objective power and MPP facts.

    Raises
    ------
    ReaderError
        The file is missing, not a slide, unsupported, truncated or corrupt.

    Warns
    -----
    UserWarning
        When the file states no pixel size and ``mpp`` is not given (also listed in
        ``LazyImage.warnings``); the scale then defaults to 1.0 um/px.

    Examples
    --------
    >>> image = read_slide("tumour.svs")  # doctest: +SKIP
    >>> image.levels[0][0:256, 0:256].compute().shape  # doctest: +SKIP
    (256, 256, 3)
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if min_level_size < 1:
        raise ValueError(f"min_level_size must be at least 1, got {min_level_size}")
    user_mpp = _user_mpp(mpp)
    if not path.exists():
        raise ReaderError(path, "file not found")
    if path.is_dir():
        raise ReaderError(path, "is a folder; pick the slide file inside it")
    opened = _open(path, backend)
    return _to_lazy_image(path, opened, user_mpp, min_level_size)


def is_slide_file(path: str | Path) -> bool:
    """Whether ``path`` looks like a whole-slide image (a cheap check that never raises).

    True for existing files with a vendor suffix (``.svs``, ``.ndpi``, ``.mrxs``, ``.scn``,
    ``.bif``, ``.vms``, ``.vmu``), for RGB(A) PNG and JPEG pictures, and for ``.tif``/``.tiff``
    (including ``.ome.tif``) files whose first image is 8-bit RGB and either tiled, pyramidal
    (SubIFDs or a following reduced-resolution page) or a single 2-D RGB picture (an H&E
    tile). A multi-page stack, a grayscale or a multi-channel microscopy TIFF is not a slide.
    """
    try:
        path = Path(path)
        suffix = path.suffix.lower()
        if not path.is_file():
            return False
        if suffix in SLIDE_SUFFIXES:
            return True
        if suffix in PICTURE_SUFFIXES:
            return is_rgb_picture(path)
        if suffix not in TIFF_SUFFIXES:
            return False
        return _is_tiled_rgb_tiff(path)
    except Exception:
        return False


def _is_tiled_rgb_tiff(path: Path) -> bool:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        rgb = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
        if not rgb or page.samplesperpixel not in (3, 4) or page.dtype != "uint8":
            return False
        if page.is_tiled or page.subifds:
            return True
        following = tif.pages.get(1) if len(tif.pages) > 1 else None
        if following is not None and following.subfiletype & 1:
            return True
        return len(tif.series) == 1 and tif.series[0].axes == "YXS"  # one 2-D RGB picture


def _open(path: Path, backend: str) -> OpenedSlide:
    """Open with the requested backend; ``auto`` falls back from tifffile to openslide."""
    if backend == "openslide":
        return open_with_openslide(path)
    if backend == "tifffile":
        return open_with_tifffile(path)
    if path.suffix.lower() in OPENSLIDE_ONLY_SUFFIXES:
        return open_with_openslide(path)
    if path.suffix.lower() in PICTURE_SUFFIXES:
        return open_picture(path)
    try:
        return open_with_tifffile(path)
    except TifffileUnsupported as tiff_error:
        try:
            return open_with_openslide(path)
        except ReaderError as slide_error:
            raise ReaderError(
                path,
                "is not a slide that tifffile or openslide can read "
                f"(tifffile: {tiff_error.problem}; {slide_error.problem})",
            ) from slide_error


def _to_lazy_image(
    path: Path, opened: OpenedSlide, user_mpp: tuple[float, float] | None, min_level_size: int
) -> LazyImage:
    native = len(opened.levels)
    levels = extend_pyramid(opened.levels, min_level_size, source=opened.readers[-1])
    notes = [f"{path.name}: {note}" for note in opened.notes]
    if user_mpp is not None:
        scale, source = user_mpp, "user"
    elif opened.mpp is not None:
        scale, source = opened.mpp, opened.mpp_source
    else:
        scale, source = (DEFAULT_MPP, DEFAULT_MPP), None
        notes.append(
            f"{path.name}: the pixel size (MPP) is unknown (the file does not state it); "
            f"using {DEFAULT_MPP} um/px. {MPP_HINT}"
        )
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    shapes = [[int(s) for s in level.shape[:2]] for level in levels]
    metadata = {
        "vendor": opened.vendor,
        "format": opened.format,
        "backend": opened.backend,
        "level_shapes": shapes,
        "downsamples": [shapes[0][0] / shape[0] for shape in shapes],
        "tile_size": [int(t) for t in opened.tile_size],
        "native_levels": native,
        "computed_levels": len(levels) - native,
        "objective_power": opened.objective_power,
        "mpp": [float(scale[0]), float(scale[1])],
        "mpp_known": source is not None,
        "mpp_source": source,
        "file_mpp": list(opened.mpp) if opened.mpp is not None else None,
        **opened.extra,
    }
    return LazyImage(
        levels=levels,
        axes="yxc",
        scale=(float(scale[0]), float(scale[1])),
        unit="um",
        name=_display_name(path),
        modality="slide",
        source=str(path),
        kind="image",
        metadata=metadata,
        warnings=notes,
        display={"rgb": True},
    )


def _user_mpp(mpp: float | Sequence[float] | None) -> tuple[float, float] | None:
    """Validate the ``mpp`` argument and return it as ``(mpp_y, mpp_x)``."""
    if mpp is None:
        return None
    values = [float(mpp)] * 2 if isinstance(mpp, (int, float)) else [float(v) for v in mpp]
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"mpp must be a positive number or (mpp_y, mpp_x), got {mpp!r}")
    return values[0], values[1]


def _display_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
