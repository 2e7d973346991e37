"""Blending weights for overlapping tile windows.

A blended pixel is ``sum(w_t * v_t) / sum(w_t)`` over the tiles ``t`` whose window covers it,
so the weights only need to be positive; their shape decides how fast a tile's influence fades
towards its window's edge, where a network sees the least context.
"""

from __future__ import annotations

import numpy as np

from napari_neuroseg.engine.choices import BlendMode

BLEND_MODES: tuple[str, ...] = BlendMode.values()

GAUSSIAN_SIGMA_SCALE = 0.125
"""Gaussian sigma as a fraction of the window size (MONAI's default)."""

MIN_WEIGHT = 1e-3
"""Floor for the weights, so a pixel covered by one tile's window edge is still defined."""


def check_blend(blend: str) -> str:
    """``blend`` as a plain string if it is one of :data:`BLEND_MODES`, else raise.

    Raises
    ------
    EngineError
        An unknown blend mode (see :class:`~napari_neuroseg.engine.choices.BlendMode`).
    """
    return str(BlendMode.parse(blend).value)


def _profile(n: int, blend: str) -> np.ndarray:
    pos = np.arange(n, dtype=np.float64)
    centre = (n - 1) / 2
    if blend == "gaussian":
        sigma = max(GAUSSIAN_SIGMA_SCALE * n, 0.5)
        prof = np.exp(-0.5 * ((pos - centre) / sigma) ** 2)
    elif blend == "linear":
        prof = np.minimum(pos + 1, n - pos) / ((n + 1) // 2)
    else:
        prof = np.ones(n)
    return prof


def blend_weights(shape: tuple[int, int], blend: str) -> np.ndarray:
    """Separable 2D weights for one tile window.

    Parameters
    ----------
    shape : (int, int)
        Window height and width.
    blend : str
        ``"gaussian"`` (sigma = 1/8 of the size), ``"linear"`` (a tent, 1 in the centre),
        ``"constant"`` (plain average) or ``"none"`` (ones: the engine then writes only cores,
        which never overlap).

    Returns
    -------
    numpy.ndarray
        float32 ``shape`` array with maximum 1 and minimum at least :data:`MIN_WEIGHT`.
    """
    check_blend(blend)
    weights = np.outer(_profile(shape[0], blend), _profile(shape[1], blend))
    weights /= weights.max()
    return np.maximum(weights, MIN_WEIGHT).astype(np.float32)
