"""Editing instance labels (nuclei): delete, merge, split, add, relabel.

Every function takes a 2-D integer array of instance ids (0 = background) and returns a new
array; the input is never modified. Work is done on the bounding box of the instances
involved, so an edit costs the size of the objects, plus one copy of the array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.feature import peak_local_max
from skimage.segmentation import expand_labels, relabel_sequential, watershed

__all__ = [
    "add_instance",
    "delete_instances",
    "instance_ids",
    "instance_on_line",
    "merge_instances",
    "next_id",
    "relabel_compact",
    "split_instance_along_line",
    "split_instance_watershed",
]


def _check(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"instance labels must be a 2-D integer array, got {labels.ndim}-D "
                         f"{labels.dtype}")
    return labels


def _present(labels: np.ndarray, ids: Iterable[int]) -> list[int]:
    ids = sorted({int(i) for i in ids})
    if not ids or 0 in ids:
        raise ValueError(f"choose instance ids > 0, got {ids}")
    missing = [i for i in ids if not np.any(labels == i)]
    if missing:
        raise ValueError(f"no instance with id {', '.join(map(str, missing))} in these labels")
    return ids


def _bbox(mask: np.ndarray, pad: int = 1) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (slice(max(0, ys.min() - pad), min(h, ys.max() + pad + 1)),
            slice(max(0, xs.min() - pad), min(w, xs.max() + pad + 1)))


def instance_ids(labels: np.ndarray) -> list[int]:
    """The ids present (> 0), sorted."""
    return [int(i) for i in np.unique(_check(labels)) if i > 0]


def next_id(labels: np.ndarray) -> int:
    """The next free id: one more than the largest id present (1 for empty labels)."""
    labels = _check(labels)
    return int(labels.max(initial=0)) + 1


def delete_instances(labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """``labels`` with the instances ``ids`` set to background."""
    labels = _check(labels)
    ids = _present(labels, ids)
    out = labels.copy()
    out[np.isin(out, ids)] = 0
    return out


def merge_instances(labels: np.ndarray, ids: Iterable[int], into: int | None = None) -> np.ndarray:
    """``labels`` with the instances ``ids`` (two or more) made one, id ``into``.

    Parameters
    ----------
    labels : numpy.ndarray
    ids : iterable of int
        The instances to merge.
    into : int, optional
        The id of the result; the smallest of ``ids`` when None.
    """
    labels = _check(labels)
    ids = _present(labels, ids)
    if len(ids) < 2:
        raise ValueError(f"merging needs two or more instances, got {ids}")
    target = ids[0] if into is None else int(into)
    if target <= 0:
        raise ValueError(f"the merged id must be > 0, got {target}")
    out = labels.copy()
    out[np.isin(out, ids)] = target
    return out


def add_instance(labels: np.ndarray, mask: np.ndarray,
                 new_id: int | None = None) -> tuple[np.ndarray, int]:
    """Paint ``mask`` as a new instance (over whatever is there).

    Returns
    -------
    labels : numpy.ndarray
    new_id : int
        :func:`next_id` unless given.
    """
    labels = _check(labels)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask of shape {mask.shape} does not fit labels {labels.shape}")
    if not mask.any():
        raise ValueError("the new instance's mask is empty")
    value = next_id(labels) if new_id is None else int(new_id)
    out = labels.copy()
    out[mask] = value
    return out, value


def relabel_compact(labels: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Ids renumbered 1..n in order of their old values.

    Returns
    -------
    labels : numpy.ndarray
    mapping : dict
        ``{old id: new id}`` for every instance.
    """
    labels = _check(labels)
    out, forward, _ = relabel_sequential(labels)
    mapping = {int(old): int(forward[old]) for old in np.unique(labels) if old > 0}
    return out.astype(labels.dtype, copy=False), mapping


def _rasterise_polyline(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    pts = np.rint(points).astype(np.int64)
    for (y0, x0), (y1, x1) in pairwise(pts):
        rr, cc = draw_line(int(y0), int(x0), int(y1), int(x1))
        keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        mask[rr[keep], cc[keep]] = True
    return mask


def _extend(points: np.ndarray, length: float) -> np.ndarray:
    """The polyline with its end segments prolonged by ``length`` (so it crosses an object)."""
    pts = points.astype(float).copy()
    for end, prev in ((0, 1), (-1, -2)):
        d = pts[end] - pts[prev]
        norm = float(np.hypot(*d))
        if norm > 0:
            pts[end] = pts[end] + d / norm * length
    return pts


def instance_on_line(labels: np.ndarray, points: Sequence[Sequence[float]]) -> int:
    """The instance the polyline ``points`` (y, x) crosses most (0 when it crosses none)."""
    labels = _check(labels)
    crossed = labels[_rasterise_polyline(np.asarray(points, float), labels.shape)]
    crossed = crossed[crossed > 0]
    return int(np.bincount(crossed).argmax()) if crossed.size else 0


def _two_parts(labels: np.ndarray, instance: int, parts: np.ndarray, box: tuple[slice, slice],
               new_id: int | None) -> tuple[np.ndarray, int]:
    """Write a two-part split of ``instance`` (``parts`` in the box: 0, 1 or 2)."""
    value = next_id(labels) if new_id is None else int(new_id)
    out = labels.copy()
    crop = out[box]
    crop[parts == 2] = value
    crop[parts == 1] = instance
    return out, value


def split_instance_along_line(labels: np.ndarray, instance: int,
                              points: Sequence[Sequence[float]],
                              new_id: int | None = None) -> tuple[np.ndarray, int]:
    """Cut one instance in two along a drawn polyline.

    The line's end segments are prolonged across the instance, its pixels cut the instance
    into 4-connected pieces; the largest keeps ``instance``, the second largest gets the new
    id, and the line pixels and any smaller pieces join the nearer of the two.

    Parameters
    ----------
    labels : numpy.ndarray
    instance : int
        The id to split.
    points : sequence of (y, x)
        The polyline in pixel coordinates of ``labels`` (two points or more).
    new_id : int, optional
        Id of the second part; :func:`next_id` when None.

    Returns
    -------
    labels : numpy.ndarray
    new_id : int

    Raises
    ------
    ValueError
        When the instance is absent or the line does not cut it in two.
    """
    labels = _check(labels)
    instance = _present(labels, [instance])[0]
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[0] < 2 or pts.shape[1] != 2:
        raise ValueError(f"a split line needs two or more (y, x) points, got {pts.shape}")
    box = _bbox(labels == instance)
    mask = labels[box] == instance
    local = pts - [box[0].start, box[1].start]
    cut = _rasterise_polyline(_extend(local, float(sum(mask.shape))), mask.shape)
    pieces, n = ndi.label(mask & ~cut)
    if n < 2:
        raise ValueError(f"the line does not cut instance {instance} in two")
    sizes = np.bincount(pieces.ravel())[1:]
    first, second = (np.argsort(sizes)[::-1][:2] + 1).tolist()
    parts = np.zeros(mask.shape, dtype=np.int32)
    parts[pieces == first] = 1
    parts[pieces == second] = 2
    parts = expand_labels(parts, distance=float(sum(mask.shape)))
    parts[~mask] = 0
    return _two_parts(labels, instance, parts, box, new_id)


def split_instance_watershed(labels: np.ndarray, instance: int,
                             new_id: int | None = None) -> tuple[np.ndarray, int]:
    """Split one instance in two by a watershed of its distance transform.

    The two highest peaks of the distance to the background (at least a few pixels apart)
    seed the watershed. A convex object with a single peak is cut through its centroid,
    across its long axis.

    Returns
    -------
    labels : numpy.ndarray
    new_id : int

    Raises
    ------
    ValueError
        When the instance is absent or too small (under 4 pixels) to split.
    """
    labels = _check(labels)
    instance = _present(labels, [instance])[0]
    box = _bbox(labels == instance)
    mask = labels[box] == instance
    if mask.sum() < 4:
        raise ValueError(f"instance {instance} is too small to split ({int(mask.sum())} px)")
    distance = ndi.distance_transform_edt(mask)
    min_distance = max(1, int(distance.max() // 2))
    peaks = peak_local_max(distance, min_distance=min_distance, labels=mask.astype(np.int32),
                           num_peaks=2, exclude_border=False)
    if len(peaks) >= 2:
        markers = np.zeros(mask.shape, dtype=np.int32)
        markers[tuple(peaks[0])] = 1
        markers[tuple(peaks[1])] = 2
        parts = watershed(-distance, markers, mask=mask)
    else:
        parts = _halves(mask)
    if not ((parts == 1).any() and (parts == 2).any()):
        parts = _halves(mask)
    return _two_parts(labels, instance, parts, box, new_id)


def _halves(mask: np.ndarray) -> np.ndarray:
    """Parts 1 and 2 of ``mask`` on either side of the line through its centroid, across
    its principal (long) axis."""
    ys, xs = np.nonzero(mask)
    coords = np.stack([ys, xs], axis=1).astype(float)
    centred = coords - coords.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(centred.T) + 1e-9 * np.eye(2))
    side = centred @ vectors[:, -1] >= 0
    parts = np.zeros(mask.shape, dtype=np.int32)
    parts[ys, xs] = np.where(side, 1, 2)
    return parts
