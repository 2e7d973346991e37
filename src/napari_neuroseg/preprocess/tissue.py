"""Tissue detection on slide thumbnails (the LGG tissue recipe's HSV thresholding) and tile filters.

A pixel is tissue when it is coloured and not too bright: saturation > ``saturation_min`` and
value < ``value_max``, both on OpenCV's 0-255 HSV scale, followed by a morphological closing
then opening with a square kernel, exactly like the LGG tissue recipe's ``detect_tissue_mask``
(computed here with scipy, so OpenCV is not needed). The mask is computed on a low-resolution
level; :func:`tissue_fraction` and :class:`TileFilter` then answer per-tile questions in level-0
pixels without touching level 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from napari_neuroseg.io.downsample import downsample

__all__ = [
    "TISSUE_MPP",
    "TileFilter",
    "hsv_saturation_value",
    "lowres_level",
    "select_level",
    "slide_tissue_mask",
    "slide_tissue_mask_at",
    "tile_filter_from_mask",
    "tissue_fraction",
    "tissue_mask",
]

Downsample = float | tuple[float, float]


def tissue_mask(
    rgb: np.ndarray, saturation_min: float = 15, value_max: float = 240, kernel: int = 5
) -> np.ndarray:
    """Detect stained tissue in an RGB image by HSV thresholding (the LGG tissue recipe,
    docs/training-recipes.md).

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB image, typically a low-resolution slide level.
    saturation_min : float, optional
        Tissue has saturation strictly above this (OpenCV scale, 0-255).
    value_max : float, optional
        Tissue has value (brightness) strictly below this (0-255).
    kernel : int, optional
        Edge of the square structuring element of the closing and the opening that follow;
        ``1`` or less skips the morphology.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, True on tissue.
    """
    rgb = _as_rgb_image(rgb, "tissue_mask")
    saturation, value = hsv_saturation_value(rgb)
    mask = (saturation > saturation_min) & (value < value_max)
    if kernel > 1:
        mask = _open(_close(mask, kernel), kernel)
    return mask


def hsv_saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and value of a uint8 RGB image on OpenCV's 0-255 scale.

    ``V = max(R, G, B)`` and ``S = round(255 (V - min(R, G, B)) / V)`` (0 where ``V = 0``),
    which is what ``cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)`` computes for 8-bit images.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(..., 3)`` uint8.

    Returns
    -------
    saturation, value : numpy.ndarray
        uint8 arrays of shape ``rgb.shape[:-1]``.
    """
    value = rgb.max(axis=-1)
    spread = value.astype(np.float32) - rgb.min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(value > 0, np.rint(255.0 * spread / value), 0.0)
    return saturation.astype(np.uint8), value


def _close(mask: np.ndarray, size: int) -> np.ndarray:
    # With a box window, 'nearest' padding only repeats pixels already in the window, so the
    # border is ignored exactly as OpenCV's default morphology border does.
    grown = ndi.maximum_filter(mask.view(np.uint8), size=size, mode="nearest")
    return ndi.minimum_filter(grown, size=size, mode="nearest").astype(bool)


def _open(mask: np.ndarray, size: int) -> np.ndarray:
    shrunk = ndi.minimum_filter(mask.view(np.uint8), size=size, mode="nearest")
    return ndi.maximum_filter(shrunk, size=size, mode="nearest").astype(bool)


def select_level(levels: Sequence[Any], max_size: int = 2048) -> int | None:
    """Index of the first (largest) level whose long side is at most ``max_size`` pixels.

    Parameters
    ----------
    levels : sequence of array-like
        Pyramid levels, full resolution first, axes ``"yx..."``.
    max_size : int, optional
        Largest acceptable long side in pixels.

    Returns
    -------
    int or None
        The level index, or ``None`` when every level is larger.
    """
    if not levels:
        raise ValueError("select_level needs at least one pyramid level")
    for index, level in enumerate(levels):
        if max(level.shape[:2]) <= max_size:
            return index
    return None


def lowres_level(
    levels: Sequence[Any], max_size: int = 2048
) -> tuple[np.ndarray, tuple[float, float]]:
    """Compute one low-resolution slide level (and only that one) as a numpy array.

    Parameters
    ----------
    levels : sequence of dask.array.Array or numpy.ndarray
        Slide levels, full resolution first, axes ``"yxc"``, RGB uint8
        (``LazyImage.levels`` from :func:`napari_neuroseg.io.slide.read_slide`).
    max_size : int, optional
        The first level whose long side is at most this is computed. When every level is
        larger, the smallest level is block-averaged chunk by chunk (dask) down to that size.

    Returns
    -------
    image : numpy.ndarray
        ``(h, w, 3)`` uint8.
    downsample : (float, float)
        Level-0 pixels per pixel of ``image`` along y and x.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    index = select_level(levels, max_size)
    level = levels[-1] if index is None else levels[index]
    if index is None:
        level = _block_mean(level, math.ceil(max(level.shape[:2]) / max_size))
    image = np.asarray(level.compute() if hasattr(level, "compute") else level)
    full = levels[0].shape
    return image, (full[0] / image.shape[0], full[1] / image.shape[1])


def _block_mean(level: Any, factor: int) -> Any:
    """Lazy ``factor`` x ``factor`` block means of an RGB level, as uint8 (rounded)."""
    if not isinstance(level, da.Array):  # read block by block (it may be an opened file)
        edge = factor * max(1, 1024 // factor)
        level = da.from_array(level, chunks=(edge, edge, *level.shape[2:]))
    blocks = downsample(level, factor)
    return (blocks + 0.5 if blocks.dtype.kind == "f" else blocks).astype(np.uint8)


def slide_tissue_mask(
    levels: Sequence[Any],
    max_size: int = 2048,
    *,
    saturation_min: float = 15,
    value_max: float = 240,
    kernel: int = 5,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Tissue mask of a whole slide, computed on one low-resolution level.

    Parameters
    ----------
    levels : sequence of dask.array.Array or numpy.ndarray
        Slide levels, full resolution first, axes ``"yxc"``, RGB uint8.
    max_size : int, optional
        See :func:`lowres_level`.
    saturation_min, value_max, kernel : optional
        See :func:`tissue_mask`.

    Returns
    -------
    mask : numpy.ndarray
        ``(h, w)`` bool.
    downsample : (float, float)
        Level-0 pixels per mask pixel along y and x.
    """
    image, downsample = lowres_level(levels, max_size)
    return tissue_mask(image, saturation_min, value_max, kernel), downsample


#: µm per pixel of the slide tissue mask (QuPath's simple tissue detection uses 20 µm, and
#: TIAToolbox masks at 1.25x, about 8 µm): a fixed size, so that the 5-pixel clean-up and the
#: tile decisions mean the same on a small and a large slide.
TISSUE_MPP = 16.0


def slide_tissue_mask_at(
    levels: Sequence[Any],
    base_mpp: float,
    mpp: float = TISSUE_MPP,
    *,
    max_size: int = 8192,
    saturation_min: float = 15,
    value_max: float = 240,
    kernel: int = 5,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Tissue mask of a whole slide at a fixed physical pixel size, whatever its pyramid.

    The coarsest level no coarser than ``mpp`` is read (chunk by chunk when it is a dask array)
    and block-averaged down to about ``mpp``, so two slides of the same tissue get the same mask
    however many levels they have.

    Parameters
    ----------
    levels : sequence of dask.array.Array or numpy.ndarray
        Slide levels, full resolution first, axes ``"yxc"``, RGB uint8.
    base_mpp : float
        µm per pixel of the first level.
    mpp : float, optional
        Wanted µm per mask pixel.
    max_size : int, optional
        The mask's long side is kept at most this (coarser than ``mpp`` if it must be).
    saturation_min, value_max, kernel : optional
        See :func:`tissue_mask`.

    Returns
    -------
    mask, downsample
        As :func:`slide_tissue_mask` returns them.
    """
    if not (base_mpp > 0 and mpp > 0):
        raise ValueError(f"pixel sizes must be positive, got base {base_mpp}, mask {mpp}")
    full = levels[0].shape[:2]
    wanted = max(mpp / base_mpp, max(full) / max_size, 1.0)  # level-0 pixels per mask pixel
    downsamples = [full[0] / level.shape[0] for level in levels]
    index = max((i for i, d in enumerate(downsamples) if d <= wanted * 1.01), default=0)
    level = levels[index]
    factor = max(1, round(wanted / downsamples[index]))
    if factor > 1:
        level = _block_mean(level, factor)
    image = np.asarray(level.compute() if hasattr(level, "compute") else level)
    mask = tissue_mask(image, saturation_min, value_max, kernel)
    return mask, (full[0] / mask.shape[0], full[1] / mask.shape[1])


def tissue_fraction(
    mask_lowres: np.ndarray, tile_boxes_level0: Any, downsample: Downsample
) -> np.ndarray:
    """Fraction of tissue in each tile, read from a low-resolution mask.

    Parameters
    ----------
    mask_lowres : numpy.ndarray
        ``(h, w)`` bool tissue mask of a low-resolution level.
    tile_boxes_level0 : array-like
        ``(N, 4)`` boxes ``(y0, y1, x0, x1)`` in level-0 pixels (end exclusive).
    downsample : float or (float, float)
        Level-0 pixels per mask pixel (along y and x).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in [0, 1]: the tissue fraction of the mask pixels each box touches
        (parts outside the slide do not count; a box entirely outside gives 0).
    """
    table = _summed_area_table(mask_lowres)
    return _fractions(table, _as_boxes(tile_boxes_level0), _pair(downsample))


def _summed_area_table(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a tissue mask must be 2-d (h, w), got shape {mask.shape}")
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask.astype(bool), axis=0), axis=1, out=table[1:, 1:])
    return table


def _as_boxes(boxes: Any) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"tile boxes must have shape (N, 4) as (y0, y1, x0, x1), got {array.shape}")
    return array


def _pair(downsample: Downsample) -> tuple[float, float]:
    dy, dx = (downsample, downsample) if np.isscalar(downsample) else downsample
    if not (dy > 0 and dx > 0):
        raise ValueError(f"downsample must be positive, got {downsample}")
    return float(dy), float(dx)


def _fractions(table: np.ndarray, boxes: np.ndarray, downsample: tuple[float, float]) -> np.ndarray:
    height, width = table.shape[0] - 1, table.shape[1] - 1
    dy, dx = downsample
    y0 = np.clip(np.floor(boxes[:, 0] / dy), 0, height).astype(np.int64)
    y1 = np.clip(np.ceil(boxes[:, 1] / dy), 0, height).astype(np.int64)
    x0 = np.clip(np.floor(boxes[:, 2] / dx), 0, width).astype(np.int64)
    x1 = np.clip(np.ceil(boxes[:, 3] / dx), 0, width).astype(np.int64)
    area = np.maximum(y1 - y0, 0) * np.maximum(x1 - x0, 0)
    inside = area > 0
    y1, x1 = np.maximum(y1, y0), np.maximum(x1, x0)
    total = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return np.where(inside, total / np.maximum(area, 1), 0.0)


class TileFilter:
    """Keep tiles whose tissue fraction reaches a threshold (a callable for the engine).

    Parameters
    ----------
    mask_lowres : numpy.ndarray
        ``(h, w)`` bool tissue mask of a low-resolution level.
    downsample : float or (float, float)
        Level-0 pixels per mask pixel.
    min_fraction : float, optional
        A tile is kept when at least this fraction of it is tissue.

    Examples
    --------
    >>> keep = TileFilter(mask, downsample=16)
    >>> keep((0, 512, 0, 512)), keep(0, 512, 0, 512)  # a box in level-0 pixels
    """

    def __init__(self, mask_lowres: np.ndarray, downsample: Downsample, min_fraction: float = 0.05):
        if not 0.0 <= min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
        self._table = _summed_area_table(mask_lowres)
        self.downsample = _pair(downsample)
        self.min_fraction = float(min_fraction)

    def fraction(self, *box: Any) -> float:
        """Tissue fraction of one box ``(y0, y1, x0, x1)`` in level-0 pixels."""
        flat = box[0] if len(box) == 1 else box
        return float(_fractions(self._table, _as_boxes(flat), self.downsample)[0])

    def __call__(self, *box: Any) -> bool:
        """Whether the box (one 4-tuple or four numbers, level-0 pixels) holds enough tissue."""
        return self.fraction(*box) >= self.min_fraction

    def fractions(self, tile_boxes_level0: Any) -> np.ndarray:
        """Tissue fractions of many boxes at once (see :func:`tissue_fraction`)."""
        return _fractions(self._table, _as_boxes(tile_boxes_level0), self.downsample)


def tile_filter_from_mask(
    mask_lowres: np.ndarray, downsample: Downsample, min_fraction: float = 0.05
) -> TileFilter:
    """A tile filter for the engine: ``filter((y0, y1, x0, x1)) -> bool`` in level-0 pixels.

    Parameters
    ----------
    mask_lowres : numpy.ndarray
        ``(h, w)`` bool tissue mask, e.g. from :func:`slide_tissue_mask`.
    downsample : float or (float, float)
        Level-0 pixels per mask pixel.
    min_fraction : float, optional
        Keep tiles with at least this tissue fraction.

    Returns
    -------
    TileFilter
        Callable on one box; :meth:`TileFilter.fractions` answers many boxes at once.
    """
    return TileFilter(mask_lowres, downsample, min_fraction)


def _as_rgb_image(rgb: Any, caller: str) -> np.ndarray:
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{caller} needs an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{caller} needs uint8 RGB, got {array.dtype}; convert with "
                         "skimage.util.img_as_ubyte first")
    return array
