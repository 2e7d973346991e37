"""3-D connected-component clean-up of a label volume, and lesion volumes in ml.

A per-slice segmentation of an MRI stack leaves specks: small blobs and blobs that appear on a
single slice only. :func:`clean_labels` drops the 3-D connected components of each class that
are smaller than a volume or that lie on one slice, without modifying its input;
:func:`volume_ml` turns a voxel count into millilitres from the voxel spacing
(1 ml = 1000 mm³). Pure numpy/scipy: no napari, no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "CleanupResult",
    "clean_labels",
    "min_voxels_for_volume",
    "volume_ml",
    "voxel_volume_ml",
]

#: Length of one unit in mm, for the units layers and readers use.
UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "um": 1e-3, "µm": 1e-3, "micron": 1e-3,
           "micrometer": 1e-3, "cm": 10.0, "centimeter": 10.0, "m": 1000.0, "meter": 1000.0}


@dataclass(frozen=True)
class CleanupResult:
    """What :func:`clean_labels` kept and dropped.

    Attributes
    ----------
    labels : numpy.ndarray
        The cleaned label volume (a new array; same shape and dtype as the input).
    n_components : int
        3-D components found (all foreground classes together).
    n_small : int
        Components dropped for having fewer voxels than ``min_voxels``.
    n_single_slice : int
        Components dropped for lying on one slice (counted here only when not already small).
    voxels_removed : int
        Foreground voxels set to background.
    """

    labels: np.ndarray
    n_components: int
    n_small: int
    n_single_slice: int
    voxels_removed: int

    @property
    def n_kept(self) -> int:
        """Components left."""
        return self.n_components - self.n_small - self.n_single_slice


def voxel_volume_ml(scale: Sequence[float], unit: str = "mm") -> float:
    """Volume of one voxel in ml (cm³) from the voxel size along (z, y, x).

    Parameters
    ----------
    scale : sequence of float
        Voxel size along each spatial axis (a napari layer's ``scale``), in ``unit``.
    unit : str
        ``"mm"`` (MRI and CT), ``"um"``, ``"cm"``...

    Returns
    -------
    float
        ``prod(scale in mm) / 1000``.
    """
    if unit not in UNIT_MM:
        raise ValueError(f"unknown length unit {unit!r}; use one of {sorted(UNIT_MM)}")
    if len(scale) != 3 or any(not s > 0 for s in scale):
        raise ValueError(f"need three positive voxel sizes (z, y, x), got {tuple(scale)}")
    return math.prod(float(s) * UNIT_MM[unit] for s in scale) / 1000.0


def volume_ml(labels: np.ndarray, scale: Sequence[float], unit: str = "mm",
              classes: Sequence[int] | None = None) -> float:
    """Volume of the labelled voxels in ml.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)`` label volume.
    scale, unit
        The voxel size, as in :func:`voxel_volume_ml`.
    classes : sequence of int, optional
        The label values counted; every non-zero value by default.

    Returns
    -------
    float
        ``count * voxel_volume_ml(scale, unit)``.
    """
    labels = np.asarray(labels)
    mask = labels != 0 if classes is None else np.isin(labels, list(classes))
    return int(np.count_nonzero(mask)) * voxel_volume_ml(scale, unit)


def min_voxels_for_volume(ml: float, scale: Sequence[float], unit: str = "mm") -> int:
    """The smallest voxel count whose volume reaches ``ml`` (0 for ``ml <= 0``)."""
    if ml <= 0:
        return 0
    voxel = voxel_volume_ml(scale, unit)
    return math.ceil(ml / voxel - 1e-9)


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1 (faces), 2 (edges) or 3 (corners), "
                         f"got {connectivity}")
    return ndimage.generate_binary_structure(3, connectivity)


def clean_labels(labels: np.ndarray, *, min_voxels: int = 0, drop_single_slice: bool = False,
                 connectivity: int = 3) -> CleanupResult:
    """Drop small and single-slice 3-D connected components, class by class.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)`` integer label volume, 0 = background. Not modified.
    min_voxels : int
        Components with fewer voxels are set to background (0 keeps every size).
    drop_single_slice : bool
        Also drop components whose voxels all lie on one z plane.
    connectivity : {1, 2, 3}
        Neighbourhood of a voxel: 1 shares a face (6 neighbours), 2 a face or edge (18),
        3 any corner (26, the default: a lesion that shifts by a pixel between slices stays
        one component).

    Returns
    -------
    CleanupResult
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected a (z, y, x) label volume, got shape {labels.shape}")
    if min_voxels < 0:
        raise ValueError(f"min_voxels must be >= 0, got {min_voxels}")
    structure = _structure(connectivity)
    out = labels.copy()
    n_components = n_small = n_single = removed = 0
    for value in np.unique(labels):
        if value == 0:
            continue
        components, n = ndimage.label(labels == value, structure=structure)
        if n == 0:
            continue
        n_components += n
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        drop = np.zeros(n + 1, bool)
        small = sizes < min_voxels
        small[0] = False
        drop |= small
        if drop_single_slice:
            z_extent = np.array([sl[0].stop - sl[0].start if sl is not None else 0
                                 for sl in ndimage.find_objects(components, max_label=n)])
            single = np.concatenate([[False], z_extent == 1]) & ~small
            n_single += int(single.sum())
            drop |= single
        n_small += int(small.sum())
        if drop.any():
            hit = drop[components]
            removed += int(hit.sum())
            out[hit] = 0
    return CleanupResult(labels=out, n_components=n_components, n_small=n_small,
                         n_single_slice=n_single, voxels_removed=removed)
