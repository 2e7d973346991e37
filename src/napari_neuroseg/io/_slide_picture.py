"""Picture backend of the slide reader: PNG and JPEG H&E tiles, patches and section images.

PNG and JPEG cannot be decoded region by region, so a picture is decoded whole the first time
any of its chunks is read, and the decoded pixels are kept by the reader of that one image (not
in a module cache) for the other chunks. Opening reads the header only (Pillow), including the
pixel density: a PNG ``pHYs`` chunk or a JPEG JFIF/EXIF density becomes the MPP when it is a
believable slide pixel size (72 or 96 dpi, what image programs write by default, is not).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._slide_common import OpenedSlide, file_key, level_array, plausible_mpp, slice_bounds
from ._types import ReaderError

#: Suffixes of the picture formats this backend reads.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Pillow modes read as RGB (the alpha channel of RGBA and LA is dropped).
RGB_MODES = ("RGB", "RGBA", "RGBX")
#: Chunk size (pixels per side) of the dask array over a decoded picture.
PICTURE_CHUNK = 1024
_PIL_ERRORS = (
    OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError
)
_UM_PER_INCH = 25400.0


def is_rgb_picture(path: str | Path) -> bool:
    """Whether ``path`` is a PNG or JPEG file holding an RGB(A) image (header only; never raises).

    Grayscale, palette and 16-bit pictures are left to other readers.
    """
    try:
        path = Path(path)
        if path.suffix.lower() not in PICTURE_SUFFIXES or not path.is_file():
            return False
        with Image.open(path) as image:
            return image.format in ("PNG", "JPEG") and image.mode in RGB_MODES
    except Exception:
        return False


class PictureReader:
    """Array-like (``shape``, ``dtype``, ``__getitem__``) over the RGB pixels of a picture.

    Parameters
    ----------
    path : pathlib.Path
        The PNG or JPEG file.
    shape : tuple of int
        ``(height, width, 3)`` from the header.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int]) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._pixels: np.ndarray | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[Path, tuple[int, int, int]]]:
        """Pickle without the decoded pixels (process workers decode again)."""
        return PictureReader, (self.path, self.shape)

    def _decoded(self) -> np.ndarray:
        with self._lock:
            if self._pixels is None:
                self._pixels = _decode(self.path, self.shape)
            return self._pixels

    def __getitem__(self, key: Any) -> np.ndarray:
        """The region ``key`` (slices along y and x, optionally a channel key)."""
        y0, y1, x0, x1, channels = slice_bounds(key, self.shape)
        return self._decoded()[y0:y1, x0:x1][:, :, channels]


def _decode(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except _PIL_ERRORS as exc:
        raise ReaderError(path, f"cannot decode the picture ({type(exc).__name__}: {exc})") from exc
    if pixels.shape != shape:
        raise ReaderError(path, f"decoded shape {pixels.shape} differs from its header {shape}")
    return pixels


def open_picture(path: Path) -> OpenedSlide:
    """Describe a PNG or JPEG picture as a one-level slide, reading its header only.

    Raises
    ------
    ReaderError
        The file is not a readable PNG/JPEG or not an RGB(A) picture.
    """
    try:
        with Image.open(path) as image:
            fmt, mode, size = image.format, image.mode, image.size
            info = dict(image.info)
    except _PIL_ERRORS as exc:
        raise ReaderError(path, f"not a readable PNG or JPEG picture ({exc})") from exc
    if fmt not in ("PNG", "JPEG"):
        raise ReaderError(path, f"is a {fmt} file, not a PNG or JPEG picture")
    if mode not in RGB_MODES:
        raise ReaderError(path, f"is a {mode} picture, not an RGB H&E image")
    width, height = size
    reader = PictureReader(path, (int(height), int(width), 3))
    chunks = (min(PICTURE_CHUNK, height), min(PICTURE_CHUNK, width))
    level = level_array(reader, chunks, (*file_key(path), "picture", 0))
    mpp, notes = _density_mpp(path, info)
    return OpenedSlide(
        levels=[level],
        readers=[reader],
        backend="pillow",
        vendor="picture",
        format=fmt.lower(),
        tile_size=chunks,
        mpp=mpp,
        mpp_source="picture pixel density (dpi)" if mpp is not None else None,
        notes=notes,
        extra={"picture_mode": mode},
    )


def _density_mpp(path: Path, info: dict[str, Any]) -> tuple[tuple[float, float] | None, list[str]]:
    """MPP ``(y, x)`` from the picture's dpi, or None with a note when it is not believable."""
    dpi = info.get("dpi")
    try:
        dpi_x, dpi_y = (float(v) for v in dpi)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None, []
    if dpi_x <= 0 or dpi_y <= 0:
        return None, []
    mpp = (_UM_PER_INCH / dpi_y, _UM_PER_INCH / dpi_x)
    if plausible_mpp(mpp[0]) and plausible_mpp(mpp[1]):
        return mpp, []
    return None, [
        f"its pixel density ({dpi_x:g} dpi, {mpp[1]:.4g} um/px) is an image-program default, "
        "not a measured pixel size; ignored"
    ]
