"""Macenko's stain estimate (Macenko et al., ISBI 2009): optical density, the plane of the two
main eigenvectors of the stained pixels' OD covariance, the extreme stain directions in it and
the 99th-percentile concentrations. :class:`~napari_neuroseg.preprocess.stain.MacenkoNormalizer`
maps tiles with it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_STAINED_PIXELS", "estimate_stains", "optical_density"]

#: Fewer non-transparent pixels than this cannot give a stable stain estimate.
MIN_STAINED_PIXELS = 100


def optical_density(rgb: np.ndarray, io: float = 240.0) -> np.ndarray:
    """Optical density ``-log(max(I, 1) / io)`` of an RGB image.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(..., 3)`` intensities in 0-255.
    io : float, optional
        Transmitted (background) light intensity.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape (negative where ``I > io``).
    """
    return -np.log(np.maximum(np.asarray(rgb, dtype=np.float64), 1.0) / io)


def estimate_stains(
    rgb: np.ndarray,
    tissue_mask: np.ndarray | None = None,
    *,
    io: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate the H&E stain matrix and 99th-percentile concentrations of an image (Macenko).

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` (or ``(N, 3)`` pixels) uint8 RGB.
    tissue_mask : numpy.ndarray, optional
        Bool mask of the pixels to use (same leading shape as ``rgb``).
    io : float, optional
        Transmitted light intensity.
    alpha : float, optional
        Angle percentile (in percent) of the extreme stain directions.
    beta : float, optional
        Pixels with OD below this in any channel are treated as transparent.

    Returns
    -------
    stain_matrix : numpy.ndarray
        ``(2, 3)`` unit OD vectors, hematoxylin first.
    max_concentrations : numpy.ndarray
        ``(2,)`` 99th percentiles of the concentrations over the stained pixels.

    Raises
    ------
    ValueError
        If fewer than ``MIN_STAINED_PIXELS`` stained pixels are left (blank or masked out).
    """
    od = _stained_pixels(rgb, tissue_mask, io, beta)
    basis = _principal_plane(od)
    projected = od @ basis
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [alpha, 100.0 - alpha])
    first = basis @ np.array([np.cos(low), np.sin(low)])
    second = basis @ np.array([np.cos(high), np.sin(high)])
    # Hematoxylin absorbs more red than eosin does.
    stains = np.stack([first, second] if first[0] > second[0] else [second, first])
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    max_concentrations = np.percentile(od @ np.linalg.pinv(stains), 99, axis=0)
    if not np.all(max_concentrations > 0):
        raise ValueError(f"cannot estimate stains: 99th-percentile concentrations "
                         f"{max_concentrations} are not positive (is only one stain present?)")
    return stains, max_concentrations


def _stained_pixels(
    rgb: np.ndarray, mask: np.ndarray | None, io: float, beta: float
) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"Macenko needs RGB pixels (..., 3), got shape {rgb.shape}")
    od = optical_density(rgb, io).reshape(-1, 3)
    keep = np.all(od >= beta, axis=1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != rgb.shape[:-1]:
            raise ValueError(f"tissue mask shape {mask.shape} does not match image {rgb.shape}")
        keep &= mask.reshape(-1)
    if keep.sum() < MIN_STAINED_PIXELS:
        raise ValueError(
            f"cannot estimate stains: only {int(keep.sum())} stained pixels (optical density "
            f">= {beta} in every channel, inside the tissue mask); need {MIN_STAINED_PIXELS}. "
            "Is the image blank background, or the tissue mask empty?"
        )
    return od[keep]


def _principal_plane(od: np.ndarray) -> np.ndarray:
    """The two main eigenvectors of the OD covariance as columns, the first pointing into OD>0."""
    _, vectors = np.linalg.eigh(np.cov(od, rowvar=False))
    basis = vectors[:, [2, 1]].copy()
    if basis[:, 0].sum() < 0:
        basis[:, 0] *= -1
    return basis
