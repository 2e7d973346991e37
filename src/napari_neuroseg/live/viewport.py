"""The part of an image that is on screen, from the camera and the canvas size.

napari's ``layer.corner_pixels`` and ``data_level`` are only updated when the canvas draws (never
in a hidden viewer), so the visible box is computed from the camera instead: the canvas shows
``center +- canvas_size / (2 * zoom)`` in world units (napari 0.9 ``viewer.scene.camera``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from napari_neuroseg.engine import Region

__all__ = ["Box", "box_to_pixels", "visible_box"]


class Box(NamedTuple):
    """An axis-aligned box in world units (y0, x0) inclusive to (y1, x1) exclusive."""

    y0: float
    x0: float
    y1: float
    x1: float

    @property
    def center(self) -> tuple[float, float]:
        """(y, x) of the middle."""
        return (self.y0 + self.y1) / 2.0, (self.x0 + self.x1) / 2.0


def visible_box(center: Sequence[float], zoom: float, canvas_size: Sequence[int],
                margin: float = 0.0) -> Box:
    """The world box the canvas shows, grown by ``margin`` (a fraction of its size) per side.

    Parameters
    ----------
    center : sequence of float
        The camera centre; the last two values are the displayed (y, x) world coordinates.
    zoom : float
        Screen pixels per world unit (``camera.zoom``).
    canvas_size : sequence of int
        (height, width) of the canvas in screen pixels (``viewer.canvas.size``).
    margin : float
        Extra fraction of the box added on every side (0.1 = 10 %).

    Returns
    -------
    Box
    """
    if zoom <= 0 or not math.isfinite(zoom):
        raise ValueError(f"zoom must be a positive number, got {zoom}")
    cy, cx = float(center[-2]), float(center[-1])
    half_h = canvas_size[0] / (2.0 * zoom) * (1.0 + 2.0 * margin)
    half_w = canvas_size[1] / (2.0 * zoom) * (1.0 + 2.0 * margin)
    return Box(cy - half_h, cx - half_w, cy + half_h, cx + half_w)


def box_to_pixels(box: Box, scale: Sequence[float], translate: Sequence[float],
                  shape: Sequence[int]) -> Region | None:
    """The pixels of an array (napari ``scale``/``translate``, last two axes) under ``box``.

    Parameters
    ----------
    box : Box
        World coordinates.
    scale, translate : sequence of float
        The array's world geometry; the last two values are used (y, x). A pixel ``i`` covers
        ``translate + scale * [i - 0.5, i + 0.5)``, as napari draws it.
    shape : sequence of int
        The array's shape; its (y, x) axes are the first two of the last two or three (an RGB
        axis last is ignored when ``len(shape) > len(scale)``).

    Returns
    -------
    Region or None
        Clipped to the array; None when the box misses it.
    """
    sy, sx = float(scale[-2]), float(scale[-1])
    ty, tx = float(translate[-2]), float(translate[-1])
    spatial = list(shape[:len(scale)]) if len(shape) > len(scale) else list(shape)
    h, w = int(spatial[-2]), int(spatial[-1])
    y0 = max(0, math.floor((box.y0 - ty) / sy + 0.5))
    x0 = max(0, math.floor((box.x0 - tx) / sx + 0.5))
    y1 = min(h, math.ceil((box.y1 - ty) / sy + 0.5))
    x1 = min(w, math.ceil((box.x1 - tx) / sx + 0.5))
    if y1 <= y0 or x1 <= x0:
        return None
    return Region(y0, x0, y1, x1)
