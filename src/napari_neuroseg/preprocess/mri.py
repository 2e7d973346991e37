"""Intensity standardisation for MRI (and any image): per-image, per-channel z-scores."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["zscore"]

Clip = float | tuple[float, float] | None


def zscore(
    x: np.ndarray,
    mask: np.ndarray | None = None,
    eps: float = 1e-6,
    *,
    channel_axis: int | None = None,
    clip: Clip = None,
    fill_outside: float | None = None,
) -> np.ndarray:
    """Z-score an image, with statistics taken over a mask or the nonzero voxels.

    Parameters
    ----------
    x : numpy.ndarray
        Image of any dimensionality.
    mask : numpy.ndarray, optional
        Bool mask of the voxels whose mean and standard deviation are used (spatial shape,
        i.e. ``x``'s shape without the channel axis). By default the nonzero voxels of each
        channel; all voxels when a channel is entirely zero.
    eps : float, optional
        Added to the standard deviation (a constant image maps to zeros, not to NaN).
    channel_axis : int, optional
        Axis of ``x`` holding channels (e.g. FLAIR, T1, T1c); each is standardised on its own.
        ``None``: one set of statistics for the whole image.
    clip : float or (float, float), optional
        Clip the result to ``[-clip, clip]`` or to ``(low, high)``.
    fill_outside : float, optional
        Value for voxels outside the mask (or the zero voxels when no mask is given);
        by default they keep their z-score.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``x``; ``x`` is not modified.

    Raises
    ------
    ValueError
        If ``mask`` does not match the spatial shape, or ``clip`` is not increasing.
    """
    data = np.asarray(x, dtype=np.float32)
    if channel_axis is None:
        return _zscore_one(data, _spatial_mask(mask, data.shape), eps, clip, fill_outside)
    axis = channel_axis % data.ndim
    moved = np.moveaxis(data, axis, 0)
    region = _spatial_mask(mask, moved.shape[1:])
    out = np.stack([_zscore_one(channel, region, eps, clip, fill_outside) for channel in moved])
    return np.moveaxis(out, 0, axis)


def _spatial_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    region = np.asarray(mask, dtype=bool)
    if region.shape != tuple(shape):
        raise ValueError(f"zscore mask shape {region.shape} does not match the image's spatial "
                         f"shape {tuple(shape)}")
    return region


def _zscore_one(
    data: np.ndarray, mask: np.ndarray | None, eps: float, clip: Clip, fill: float | None
) -> np.ndarray:
    region = data != 0 if mask is None else mask
    values = data[region] if region.any() else data.ravel()
    mean, std = (float(values.mean(dtype=np.float64)),
                                 float(values.std(dtype=np.float64))) if values.size else (0.0, 0.0)
    out = (data - np.float32(mean)) / np.float32(std + eps)
    if clip is not None:
        low, high = (-clip, clip) if np.isscalar(clip) else clip
        if not low < high:
            raise ValueError(f"clip must give low < high, got {clip}")
        np.clip(out, low, high, out=out)
    if fill is not None:
        out[~region] = fill
    return out
