"""Polygons on a pixel grid: trace a mask's exact boundary, and fill a polygon back.

Vertices sit on pixel corners: pixel ``(r, c)`` spans ``[c, c+1] x [r, r+1]`` in ``(x, y)``.
Tracing keeps 4-connected pieces and their holes; filling takes a pixel when its centre is
inside, so tracing then filling at the same grid gives the mask back. Used by
:mod:`napari_neuroseg.annotate.geojson`, which adds the classes and the file format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["fill_polygon", "mask_polygons"]

_FOUR = ndimage.generate_binary_structure(2, 1)


def _boundary_edges(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start vertices ``(x, y)`` and unit directions of every fg/bg pixel edge of ``m``.

    Edges run with the foreground on the same side, so outer rings get a positive shoelace
    area in ``(x, y)`` (RFC 7946's right-hand rule on the coordinates) and holes a negative.
    """
    starts, dirs = [], []
    nb = np.zeros_like(m)
    nb[1:] = m[:-1]
    r, c = np.nonzero(m & ~nb)  # top edges, left to right
    starts.append(np.stack([c, r], 1))
    dirs.append(np.tile((1, 0), (len(r), 1)))
    nb = np.zeros_like(m)
    nb[:, :-1] = m[:, 1:]
    r, c = np.nonzero(m & ~nb)  # right edges, downwards
    starts.append(np.stack([c + 1, r], 1))
    dirs.append(np.tile((0, 1), (len(r), 1)))
    nb = np.zeros_like(m)
    nb[:-1] = m[1:]
    r, c = np.nonzero(m & ~nb)  # bottom edges, right to left
    starts.append(np.stack([c + 1, r + 1], 1))
    dirs.append(np.tile((-1, 0), (len(r), 1)))
    nb = np.zeros_like(m)
    nb[:, 1:] = m[:, :-1]
    r, c = np.nonzero(m & ~nb)  # left edges, upwards
    starts.append(np.stack([c, r + 1], 1))
    dirs.append(np.tile((0, -1), (len(r), 1)))
    return np.concatenate(starts).astype(np.int64), np.concatenate(dirs).astype(np.int64)


def _chain(starts: np.ndarray, dirs: np.ndarray) -> list[list[int]]:
    """Chain edges into closed rings (lists of edge indices).

    Where two rings touch at a corner (diagonal pixels), the turn that keeps to the current
    pixel is taken, so foreground pieces are 4-connected.
    """
    outgoing: dict[tuple[int, int], list[int]] = {}
    for k, (x, y) in enumerate(starts.tolist()):
        outgoing.setdefault((x, y), []).append(k)
    ends = (starts + dirs).tolist()
    dir_list = dirs.tolist()
    used = np.zeros(len(starts), bool)
    rings = []
    for first in range(len(starts)):
        if used[first]:
            continue
        ring, k = [], first
        while True:
            used[k] = True
            ring.append(k)
            options = outgoing[tuple(ends[k])]
            if len(options) == 1:
                nxt = options[0]
            else:
                dx, dy = dir_list[k]
                nxt = next(o for o in options
                           if dx * dir_list[o][1] - dy * dir_list[o][0] > 0)
            if nxt == first:
                break
            k = nxt
        rings.append(ring)
    return rings


def mask_polygons(mask: np.ndarray) -> list[list[np.ndarray]]:
    """The polygons of a binary mask: one per 4-connected piece, holes kept.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(h, w)`` boolean (or 0/non-0) array.

    Returns
    -------
    list of list of numpy.ndarray
        One polygon per piece: its outer ring first, then its holes; each ring an ``(n, 2)``
        float array of ``(x, y)`` pixel-corner coordinates (pixel ``(r, c)`` spans ``[c, c+1]
        x [r, r+1]``), not closed, without collinear vertices.
    """
    m = np.pad(np.asarray(mask).astype(bool), 1)
    if not m.any():
        return []
    pieces, _ = ndimage.label(m, structure=_FOUR)
    starts, dirs = _boundary_edges(m)
    polygons: dict[int, list[np.ndarray]] = {}
    holes: dict[int, list[np.ndarray]] = {}
    for ring in _chain(starts, dirs):
        d = dirs[ring]
        keep = np.any(d != np.roll(d, 1, axis=0), axis=1)  # corners only
        vertices = starts[ring][keep]
        x, y = vertices[:, 0], vertices[:, 1]
        area = np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
        (sx, sy), (dx, dy) = starts[ring[0]], dirs[ring[0]]
        # the foreground pixel on the inner side of the ring's first edge
        row = sy - (1 if (dx, dy) in ((-1, 0), (0, -1)) else 0)
        col = sx - (1 if (dx, dy) in ((0, 1), (-1, 0)) else 0)
        piece = int(pieces[row, col])
        coords = (vertices - 1).astype(np.float64)  # undo the padding
        (polygons if area > 0 else holes).setdefault(piece, []).append(coords)
    return [[outer[0], *holes.get(piece, [])] for piece, outer in sorted(polygons.items())]


def fill_polygon(shape: tuple[int, int], rings: list, offset: Sequence[float],
                 downsample: float) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The box and mask of one polygon (outer ring minus holes) on a label grid.

    Parameters
    ----------
    shape : tuple of int
        ``(h, w)`` of the label grid; the box is clipped to it.
    rings : list
        The outer ring, then the holes: each a sequence of ``(x, y)`` level-0 coordinates.
    offset : sequence of float
        ``(row, col)`` of the grid's top-left pixel, in grid pixels.
    downsample : float
        Level-0 pixels per grid pixel.

    Returns
    -------
    tuple or None
        ``(rows, cols)`` slices of the box and its boolean mask, or ``None`` when no pixel
        centre of the grid is inside.

    Notes
    -----
    A scanline fill with the even-odd rule over all rings at once (so holes are cut out):
    pixel ``(r, c)`` is inside when its centre is, a crossing at ``x`` filling columns
    ``c >= x`` up to the next crossing. Costs the polygon's box plus its edges times rows.
    """
    local = []
    for ring in rings:
        xy = np.asarray(ring, dtype=np.float64).reshape(-1, 2)[:, :2]
        # pixel-centre coordinates: pixel (r, c) is centred on (x, y) = (c, r)
        local.append(xy / downsample - (offset[1], offset[0]) - 0.5)
    outer = local[0]
    y0 = max(math.floor(outer[:, 1].min()), 0)
    y1 = min(math.ceil(outer[:, 1].max()) + 1, shape[0])
    x0 = max(math.floor(outer[:, 0].min()), 0)
    x1 = min(math.ceil(outer[:, 0].max()) + 1, shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    a = np.concatenate(local)
    b = np.concatenate([np.roll(ring, -1, axis=0) for ring in local])
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    first = np.maximum(np.ceil(lo), y0)  # rows r with lo <= r < hi, inside the box
    last = np.minimum(np.ceil(hi), y1)
    counts = np.maximum(last - first, 0).astype(np.int64)
    if not counts.sum():
        return None
    edge = np.repeat(np.arange(len(a)), counts)
    rows = first[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                               counts))
    t = (rows - a[edge, 1]) / (b[edge, 1] - a[edge, 1])
    xs = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order].astype(np.int64) - y0, np.ceil(xs[order]) - x0
    width = x1 - x0
    starts = np.clip(xs[0::2], 0, width).astype(np.int64)
    stops = np.clip(xs[1::2], 0, width).astype(np.int64)
    diff = np.zeros((y1 - y0, width + 1), np.int32)
    np.add.at(diff, (rows[0::2], starts), 1)
    np.add.at(diff, (rows[1::2], stops), -1)
    mask = np.cumsum(diff, axis=1)[:, :width] > 0
    return (slice(y0, y1), slice(x0, x1)), mask
