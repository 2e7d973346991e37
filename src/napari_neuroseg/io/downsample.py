"""Block downsampling of images (mean) and labels (most common label), NumPy or dask.

One helper serves every pyramid in the package: computed slide levels
(:mod:`._pyramid`), the levels of written TIFF and OME-Zarr files (:mod:`.writers`), the
low-resolution level a tissue mask is computed on
(:mod:`napari_neuroseg.preprocess.tissue`) and the label store's levels
(:mod:`napari_neuroseg.annotate.labelstore`).

Images are averaged, integers rounded half up in exact integer arithmetic. Labels take the
most common non-zero label of each block, so a 1-pixel stroke survives every zoom level
(taking every second pixel, or the plain mode, would drop it when it misses the kept pixel
or is outvoted by background).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import dask.array as da
import numpy as np

__all__ = ["downsample"]

Mode = Literal["mean", "labels"]


def downsample(
    array: Any,
    factor: int = 2,
    *,
    mode: Mode = "mean",
    axes: tuple[int, int] = (0, 1),
    odd: Literal["trim", "edge"] = "trim",
) -> Any:
    """Reduce each ``factor`` x ``factor`` block along ``axes`` to one pixel.

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array
        Image or labels; any other axes (channels, z...) are kept as they are. Not modified.
    factor : int, optional
        Block edge along both axes (2: one pyramid level).
    mode : {"mean", "labels"}, optional
        ``"mean"``: the block mean; integers are rounded half up, floats are summed in
        float64; the dtype stays. ``"labels"``: the most common non-zero value of the
        block (0 only where the whole block is 0; ties go to the first in row-major order).
    axes : (int, int), optional
        The two axes to downsample (``(0, 1)`` for ``"yxc"``, ``(-2, -1)`` for ``"cyx"``).
    odd : {"trim", "edge"}, optional
        A last partial block is dropped (``"trim"``: ``floor(n / factor)`` pixels), or
        completed with copies of the edge pixels (``"edge"``: ``ceil(n / factor)``).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        The same kind of array as ``array`` (a dask array stays lazy), same dtype.

    Raises
    ------
    ValueError
        An unknown ``mode`` or ``odd``, or a ``factor`` smaller than 1.

    Examples
    --------
    >>> downsample(np.array([[0, 1], [2, 3]], np.uint8))
    array([[2]], dtype=uint8)
    >>> downsample(np.array([[0, 0], [0, 7]]), mode="labels")
    array([[7]])
    """
    if mode not in ("mean", "labels"):
        raise ValueError(f"mode must be 'mean' or 'labels', not {mode!r}")
    if odd not in ("trim", "edge"):
        raise ValueError(f"odd must be 'trim' or 'edge', not {odd!r}")
    if int(factor) < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    factor = int(factor)
    ay, ax = (a % array.ndim for a in axes)
    if odd == "edge" and (array.shape[ay] % factor or array.shape[ax] % factor):
        pad = [(0, 0)] * array.ndim
        pad[ay] = (0, -array.shape[ay] % factor)
        pad[ax] = (0, -array.shape[ax] % factor)
        array = (da.pad if isinstance(array, da.Array) else np.pad)(array, pad, mode="edge")
    reduce = _reduce_mean if mode == "mean" else _reduce_labels
    if isinstance(array, da.Array):
        if array.shape[ay] < factor or array.shape[ax] < factor:  # coarsen cannot make empty
            shape = [n // factor if i in (ay, ax) else n for i, n in enumerate(array.shape)]
            return da.zeros(shape, dtype=array.dtype)
        return da.coarsen(reduce, array, {ay: factor, ax: factor}, trim_excess=True)
    array = np.asarray(array)
    keep = [slice(None)] * array.ndim
    keep[ay] = slice(0, array.shape[ay] // factor * factor)
    keep[ax] = slice(0, array.shape[ax] // factor * factor)
    trimmed = array[tuple(keep)]
    shape: list[int] = []
    for i, n in enumerate(trimmed.shape):
        shape += [n // factor, factor] if i in (ay, ax) else [n, 1]
    return reduce(trimmed.reshape(shape), axis=tuple(range(1, 2 * array.ndim, 2)))


def _parts(blocks: np.ndarray, axis: tuple[int, ...]) -> list[np.ndarray]:
    """The views of ``blocks`` at each offset inside a block (row-major order)."""
    ranges = [range(blocks.shape[a]) for a in axis]
    parts = []
    for offsets in itertools.product(*ranges):
        index: list[Any] = [slice(None)] * blocks.ndim
        for a, offset in zip(axis, offsets, strict=True):
            index[a] = offset
        parts.append(blocks[tuple(index)])
    return parts


def _reduce_mean(blocks: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """Mean over ``axis`` of reshaped blocks (``da.coarsen``'s reduction contract)."""
    if axis is None:  # dask asks for the output type with a one-element array
        return blocks
    parts = _parts(blocks, axis)
    n, dtype = len(parts), blocks.dtype
    if dtype.kind in "iub":
        small = dtype.kind == "b" or dtype == np.uint8  # 8-bit sums fit 16 bits: faster
        wide = np.uint16 if small and n <= 256 else np.int64
        total = parts[0].astype(wide)
        for part in parts[1:]:
            total += part
        total += n // 2  # rounded half up, exactly (for odd n no mean ends in .5)
        total //= n
        return total.astype(dtype)
    total = parts[0].astype(np.float64)
    for part in parts[1:]:
        total += part
    return (total / n).astype(dtype)


def _reduce_labels(blocks: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """Most common non-zero value over ``axis`` of reshaped blocks (0 for an empty block)."""
    if axis is None:
        return blocks
    parts = _parts(blocks, axis)
    best = np.zeros_like(parts[0])
    best_count = np.zeros(best.shape, dtype=np.int32)
    for part in parts:
        count = sum((part == other).astype(np.int32) for other in parts)
        better = (part != 0) & (count > best_count)
        best[better] = part[better]
        best_count[better] = count[better]
    return best
