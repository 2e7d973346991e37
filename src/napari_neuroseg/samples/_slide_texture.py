"""Procedural H&E-like texture: any region of any pyramid level, computed on its own.

Every value derives from integer-lattice hashes of level-0 positions, so neighbouring tiles
join seamlessly and lower levels show the same tissue as level 0.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = (242.0, 242.0, 240.0)
STROMA = (234.0, 160.0, 198.0)
NUCLEUS = (72.0, 42.0, 128.0)
#: Nuclei sit on a jittered grid with this pitch (level-0 pixels); radius range in pixels.
NUCLEUS_PITCH = 22.0
NUCLEUS_RADIUS = (4.0, 8.0)
MASK = 2**64 - 1
#: Below this downsample nuclei are drawn one by one; above it as their mean coverage.
EXPLICIT_NUCLEI_MAX_DOWNSAMPLE = 2


def he_region(
    y: int,
    x: int,
    height: int,
    width: int,
    *,
    downsample: float = 1.0,
    size: tuple[int, int] = (4096, 4096),
    seed: int = 0,
) -> np.ndarray:
    """An H&E-like RGB region of a synthetic slide.

    Parameters
    ----------
    y, x : int
        Top-left corner in pixels of the level with this ``downsample``.
    height, width : int
        Region size in pixels of that level.
    downsample : float, optional
        Level downsample factor (1 for full resolution, 2 for the next level, ...).
    size : (int, int), optional
        Level-0 ``(height, width)`` of the whole slide (sets the tissue outline).
    seed : int, optional
        Texture seed.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8.
    """
    d = float(downsample)
    yy = ((np.arange(height) + y + 0.5) * d)[:, None]
    xx = ((np.arange(width) + x + 0.5) * d)[None, :]
    salt = (int(seed) * 0x2545F4914F6CDD1D) & MASK
    holes = (_fbm(yy, xx, 180.0, salt + 1) - 0.66) * (12.0 / np.sqrt(d))
    tissue = _tissue_mask(yy, xx, size, d, salt) * (1.0 - np.clip(holes, 0.0, 1.0))
    brightness = 0.86 + 0.22 * _fbm(yy, xx, 18.0, salt + 2)
    if d <= EXPLICIT_NUCLEI_MAX_DOWNSAMPLE:
        nuclei, darkness = _nuclei(yy, xx, d, salt)
    else:
        mean_area = np.pi * np.mean(NUCLEUS_RADIUS) ** 2 / NUCLEUS_PITCH**2
        nuclei = np.clip(_nucleus_density(yy, xx, salt) * (mean_area * 1.3), 0.0, 1.0)
        darkness = np.ones_like(nuclei)
    rgb = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        cells = STROMA[c] * brightness * (1.0 - nuclei) + NUCLEUS[c] * darkness * nuclei
        rgb[..., c] = BACKGROUND[c] + (cells - BACKGROUND[c]) * tissue
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _tissue_mask(
    yy: np.ndarray, xx: np.ndarray, size: tuple[int, int], d: float, salt: int
) -> np.ndarray:
    """1 inside an irregular elliptical tissue outline, 0 outside, with a soft edge."""
    height, width = size
    ry = (yy - height / 2) / (0.44 * height)
    rx = (xx - width / 2) / (0.44 * width)
    wobble = _value_noise(yy, xx, max(size) / 5.0, salt + 5) - 0.5
    edge = np.sqrt(ry**2 + rx**2) + 0.35 * wobble
    sharpness = 0.44 * min(size) / (3.0 * d)
    return np.clip((1.0 - edge) * sharpness + 0.5, 0.0, 1.0)


def _nuclei(yy: np.ndarray, xx: np.ndarray, d: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (0..1) and darkness of nuclei on a jittered grid, antialiased at ``d``.

    ``yy`` (h, 1) and ``xx`` (1, w) are level-0 pixel centres. Each grid cell holds at most
    one elliptical nucleus; whether it does depends on the local nucleus density.
    """
    pitch, (lo, hi) = NUCLEUS_PITCH, NUCLEUS_RADIUS
    ys, xs = yy[:, 0], xx[0, :]
    rows = np.arange((ys[0] - hi - d) // pitch, (ys[-1] + hi + d) // pitch + 1)[:, None]
    cols = np.arange((xs[0] - hi - d) // pitch, (xs[-1] + hi + d) // pitch + 1)[None, :]
    density = _nucleus_density((rows + 0.5) * pitch, (cols + 0.5) * pitch, salt)
    drawn = _hash01(rows, cols, salt) < density
    centre_y = (rows + 0.15 + 0.7 * _hash01(rows, cols, salt + 11)) * pitch
    centre_x = (cols + 0.15 + 0.7 * _hash01(rows, cols, salt + 12)) * pitch
    radius = lo + (hi - lo) * _hash01(rows, cols, salt + 13)
    squash = 1.0 + 0.5 * _hash01(rows, cols, salt + 14)
    shade = 0.75 + 0.4 * _hash01(rows, cols, salt + 15)
    coverage = np.zeros((ys.size, xs.size), dtype=np.float32)
    darkness = np.ones_like(coverage)
    for i, j in zip(*np.nonzero(drawn), strict=True):
        r, cy, cx = radius[i, j], centre_y[i, j], centre_x[i, j]
        y0, y1 = np.searchsorted(ys, (cy - r - d, cy + r + d))
        x0, x1 = np.searchsorted(xs, (cx - r - d, cx + r + d))
        if y0 == y1 or x0 == x1:
            continue
        dist = np.hypot((ys[y0:y1, None] - cy) * squash[i, j], xs[None, x0:x1] - cx)
        alpha = np.clip((r - dist) / d + 0.5, 0.0, 1.0)
        box = coverage[y0:y1, x0:x1]
        np.copyto(darkness[y0:y1, x0:x1], shade[i, j], where=alpha > box)
        np.maximum(box, alpha, out=box)
    return coverage, darkness


def _nucleus_density(yy: np.ndarray, xx: np.ndarray, salt: int) -> np.ndarray:
    """Fraction of grid cells holding a nucleus (0.2..0.95), varying over ~400 px."""
    return 0.2 + 0.75 * _value_noise(yy, xx, 420.0, salt + 3)


def _fbm(yy: np.ndarray, xx: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Two octaves of value noise in 0..1 with lattice ``cell`` (level-0 pixels)."""
    coarse = _value_noise(yy, xx, cell, salt)
    fine = _value_noise(yy, xx, cell / 2.0, salt + 101)
    return (2.0 * coarse + fine) / 3.0


def _value_noise(yy: np.ndarray, xx: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Smoothly interpolated lattice hashes in 0..1 at the grid ``yy`` (h, 1) x ``xx`` (1, w).

    Bilinear interpolation on a grid is separable: ``weights_y @ lattice @ weights_x.T``.
    """
    weights_y, rows = _interpolation_weights(yy[:, 0] / cell)
    weights_x, cols = _interpolation_weights(xx[0, :] / cell)
    lattice = _hash01(rows[:, None], cols[None, :], salt).astype(np.float32)
    return weights_y @ lattice @ weights_x.T


def _interpolation_weights(position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smoothstep weights of each position on its two lattice neighbours, and the lattice."""
    base = np.floor(position).astype(np.int64)
    frac = _smoothstep(position - base).astype(np.float32)
    lattice = np.arange(base.min(), base.max() + 2)
    weights = np.zeros((position.size, lattice.size), dtype=np.float32)
    index = np.arange(position.size)
    weights[index, base - lattice[0]] = 1.0 - frac
    weights[index, base - lattice[0] + 1] = frac
    return weights, lattice


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _hash01(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Uniform values in [0, 1) hashed from integer lattice coordinates (splitmix-style)."""
    with np.errstate(over="ignore"):
        h = i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h = h ^ (j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ np.uint64(salt & MASK)
        h = (h ^ (h >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(29))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(32))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
