"""Geometry of a stack of parallel image slices: order, spacing, gantry tilt and resampling.

Conventions (DICOM patient coordinates, millimetres):

* ``orientation`` is ImageOrientationPatient: the row direction ``r`` (the way the column
  index, napari ``x``, grows) followed by the column direction ``c`` (the way the row index,
  napari ``y``, grows).
* The slice normal is ``n = r x c``. A slice's *position* is its ImagePositionPatient (the
  centre of its first pixel) projected on ``n``; slices are ordered by it.
* The stack frame is ``(n, c, r)``, matching the napari axes ``(z, y, x)``. A stack is
  *tilted* when its slices are shifted in-plane from one to the next (the stacking direction,
  last position minus first, is not parallel to ``n``), as with a tilted CT gantry.

Everything here is plain numpy/scipy on small arrays; nothing reads files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TILT_TOLERANCE_DEG = 0.1
SPACING_REL_TOLERANCE = 0.01
SPACING_ABS_TOLERANCE_MM = 0.005
DUPLICATE_TOLERANCE_MM = 1e-3


def direction_cosines(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Unit row and column directions of an ImageOrientationPatient value.

    Parameters
    ----------
    orientation : sequence of 6 float
        ImageOrientationPatient (row direction, then column direction).

    Returns
    -------
    row, col : numpy.ndarray
        Unit vectors of shape (3,).

    Raises
    ------
    ValueError
        If the value does not hold two independent 3-vectors.
    """
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        raise ValueError(f"ImageOrientationPatient needs 6 finite numbers, got {orientation!r}")
    row, col = iop[:3], iop[3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if min(norms) < 1e-6:
        raise ValueError(f"ImageOrientationPatient has a zero vector: {orientation!r}")
    return row / norms[0], col / norms[1]


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The unit slice normal ``row x col`` of an ImageOrientationPatient value.

    Parameters
    ----------
    orientation : sequence of 6 float
        ImageOrientationPatient.

    Returns
    -------
    numpy.ndarray
        Unit vector of shape (3,).
    """
    row, col = direction_cosines(orientation)
    normal = np.cross(row, col)
    length = float(np.linalg.norm(normal))
    if length < 1e-6:
        raise ValueError(f"ImageOrientationPatient has parallel directions: {orientation!r}")
    return normal / length


def orientation_label(orientation: Sequence[float]) -> str:
    """``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"oblique"`` from the slice normal.

    The label names the patient axis closest to the normal; a normal more than about 37
    degrees from every axis is ``"oblique"``.
    """
    normal = np.abs(slice_normal(orientation))
    axis = int(np.argmax(normal))
    if normal[axis] < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def tilt_angle_deg(first: Sequence[float], last: Sequence[float], normal: np.ndarray) -> float:
    """Angle in degrees between the stacking direction ``last - first`` and ``normal``.

    Returns 0 when the two positions coincide (a single slice).
    """
    step = np.asarray(last, dtype=float) - np.asarray(first, dtype=float)
    length = float(np.linalg.norm(step))
    if length < DUPLICATE_TOLERANCE_MM:
        return 0.0
    cosine = min(1.0, abs(float(step @ normal)) / length)
    return math.degrees(math.acos(cosine))


def is_uniform(spacings: Sequence[float]) -> bool:
    """Whether all gaps between neighbouring slices agree to within 1 % (at least 5 um)."""
    if len(spacings) < 2:
        return True
    gaps = np.asarray(spacings, dtype=float)
    tolerance = max(SPACING_REL_TOLERANCE * float(np.median(gaps)), SPACING_ABS_TOLERANCE_MM)
    return float(gaps.max() - gaps.min()) <= tolerance


def spacing_runs(spacings: Sequence[float]) -> list[tuple[float, int, int]]:
    """Group neighbouring equal gaps: ``(mean gap, first slice, last slice)``, 1-based slices."""
    runs: list[list[float]] = []
    starts: list[int] = []
    for i, gap in enumerate(spacings):
        if runs and is_uniform([*runs[-1], gap]):
            runs[-1].append(gap)
        else:
            runs.append([gap])
            starts.append(i)
    return [(float(np.mean(r)), s + 1, s + len(r) + 1) for r, s in zip(runs, starts, strict=True)]


def describe_spacing(spacings: Sequence[float], max_runs: int = 4) -> str:
    """A short text such as ``"4.22 mm (slices 1-14), 1.10 mm (14-15), 7.39 mm (15-28)"``."""
    runs = spacing_runs(spacings)
    parts = [f"{gap:.2f} mm (slices {a}-{b})" for gap, a, b in runs[:max_runs]]
    if len(runs) > max_runs:
        parts.append(f"... ({len(runs) - max_runs} more)")
    return ", ".join(parts)


@dataclass(frozen=True)
class StackGeometry:
    """Where the slices of a stack lie, in position order.

    Attributes
    ----------
    order : tuple of int
        Indices of the input slices sorted by position along the normal.
    positions_mm : tuple of float
        Sorted positions along the normal.
    offsets_mm : tuple of (float, float)
        In-plane offset ``(along c, along r)`` of each sorted slice's first pixel from the
        first slice's; all zero for an untilted stack.
    normal : tuple of float
        The unit slice normal.
    origin_mm : tuple of float
        The first slice's first pixel in the stack frame ``(n, c, r)``.
    tilt_deg : float
        Angle between the stacking direction and the normal.
    """

    order: tuple[int, ...]
    positions_mm: tuple[float, ...]
    offsets_mm: tuple[tuple[float, float], ...]
    normal: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    tilt_deg: float

    @property
    def spacings_mm(self) -> list[float]:
        """Gaps between neighbouring slices along the normal."""
        return np.diff(self.positions_mm).tolist()

    @property
    def uniform(self) -> bool:
        """Whether the gaps agree (see :func:`is_uniform`)."""
        return is_uniform(self.spacings_mm)

    @property
    def tilted(self) -> bool:
        """Whether the tilt exceeds :data:`TILT_TOLERANCE_DEG`."""
        return self.tilt_deg > TILT_TOLERANCE_DEG

    def mean_spacing(self, default: float = 1.0) -> float:
        """Mean gap, or ``default`` for a single slice."""
        gaps = self.spacings_mm
        return float(np.mean(gaps)) if gaps else float(default)

    def median_spacing(self, default: float = 1.0) -> float:
        """Median gap, or ``default`` for a single slice."""
        gaps = self.spacings_mm
        return float(np.median(gaps)) if gaps else float(default)


def stack_geometry(
    positions: Sequence[Sequence[float]], orientation: Sequence[float]
) -> StackGeometry:
    """Sort slices by position along the normal and measure spacing and tilt.

    Parameters
    ----------
    positions : sequence of 3-vectors
        ImagePositionPatient of every slice, in any order.
    orientation : sequence of 6 float
        The ImageOrientationPatient shared by the slices.

    Returns
    -------
    StackGeometry
    """
    ipp = np.asarray(positions, dtype=float).reshape(-1, 3)
    row, col = direction_cosines(orientation)
    normal = slice_normal(orientation)
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    ipp = ipp[order]
    delta = ipp - ipp[0]
    offsets = tuple((float(d @ col), float(d @ row)) for d in delta)
    first = ipp[0]
    return StackGeometry(
        order=tuple(int(i) for i in order),
        positions_mm=tuple(float(p) for p in along[order]),
        offsets_mm=offsets,
        normal=tuple(float(v) for v in normal),
        origin_mm=(float(first @ normal), float(first @ col), float(first @ row)),
        tilt_deg=tilt_angle_deg(ipp[0], ipp[-1], normal),
    )


@dataclass(frozen=True)
class SliceBlend:
    """One resampled slice: ``(1 - weight) * source[lower] + weight * source[upper]``."""

    lower: int
    upper: int
    weight: float

    @property
    def sources(self) -> tuple[int, ...]:
        """The source slices that contribute (one when the weight is 0 or 1)."""
        if self.weight <= 1e-6:
            return (self.lower,)
        if self.weight >= 1 - 1e-6:
            return (self.upper,)
        return (self.lower, self.upper)


@dataclass(frozen=True)
class ResamplePlan:
    """How to build a uniform, tilt-corrected grid from a sorted stack.

    Attributes
    ----------
    spacing_mm : float
        Gap between output slices along the normal.
    blends : tuple of SliceBlend
        One per output slice.
    shape : tuple of int
        Output ``(rows, cols)``: large enough for every shifted source slice.
    shifts_px : tuple of (float, float)
        Per source slice, the ``(row, col)`` offset added to an output pixel index to find
        the same point in that slice.
    origin_mm : tuple of float
        Output first voxel in the stack frame ``(n, c, r)``.
    """

    spacing_mm: float
    blends: tuple[SliceBlend, ...]
    shape: tuple[int, int]
    shifts_px: tuple[tuple[float, float], ...]
    origin_mm: tuple[float, float, float]


def plan_resample(
    geometry: StackGeometry,
    pixel_spacing: tuple[float, float],
    shape: tuple[int, int],
    spacing: float | None = None,
) -> ResamplePlan:
    """Plan a uniform grid along the normal whose slices line up in-plane.

    Output slice ``m`` lies at ``positions_mm[0] + m * spacing`` along the normal and is
    interpolated linearly between its two neighbouring source slices. Each source slice is
    shifted in-plane by its offset (the shear a gantry tilt causes), so a line along the normal
    keeps its pixel position; the output grid grows to hold every shifted slice.

    Parameters
    ----------
    geometry : StackGeometry
        The sorted source stack.
    pixel_spacing : (float, float)
        Source ``(row spacing, column spacing)`` in mm.
    shape : (int, int)
        Source ``(rows, cols)``.
    spacing : float, optional
        Output gap along the normal; default the median source gap.

    Returns
    -------
    ResamplePlan
    """
    step = geometry.median_spacing() if spacing is None else float(spacing)
    if not math.isfinite(step) or step <= 0:
        raise ValueError(f"resampling spacing must be a positive number of mm, got {spacing!r}")
    pos = np.asarray(geometry.positions_mm)
    count = math.floor((pos[-1] - pos[0]) / step + 1e-3) + 1
    targets = pos[0] + step * np.arange(count)
    blends = []
    for z in targets:
        upper = int(np.clip(np.searchsorted(pos, z, side="right"), 1, max(len(pos) - 1, 1)))
        lower = upper - 1 if len(pos) > 1 else 0
        upper = min(upper, len(pos) - 1)
        gap = pos[upper] - pos[lower]
        weight = float(np.clip((z - pos[lower]) / gap, 0.0, 1.0)) if gap > 0 else 0.0
        blends.append(SliceBlend(lower, upper, weight))
    offsets = np.asarray(geometry.offsets_mm, dtype=float) / np.asarray(pixel_spacing, dtype=float)
    low = offsets.min(axis=0)
    extent = np.ceil(offsets.max(axis=0) - low - 1e-6).astype(int)
    out_shape = (int(shape[0] + extent[0]), int(shape[1] + extent[1]))
    shifts = tuple((float(low[0] - o[0]), float(low[1] - o[1])) for o in offsets)
    n0, c0, r0 = geometry.origin_mm
    origin = (n0, c0 + float(low[0]) * pixel_spacing[0], r0 + float(low[1]) * pixel_spacing[1])
    return ResamplePlan(step, tuple(blends), out_shape, shifts, origin)


def shift_slice(
    pixels: np.ndarray, shift: tuple[float, float], shape: tuple[int, int], fill: float
) -> np.ndarray:
    """Sample ``pixels`` at ``output index + shift`` on a grid of ``shape`` (bilinear).

    Points outside the source get ``fill``. Returns float32.
    """
    data = np.asarray(pixels, dtype=np.float32)
    if tuple(data.shape) == tuple(shape) and max(abs(shift[0]), abs(shift[1])) < 1e-6:
        return data
    return ndimage.affine_transform(
        data,
        matrix=np.ones(2),
        offset=shift,
        output_shape=tuple(shape),
        order=1,
        mode="constant",
        cval=float(fill),
        prefilter=False,
    )


def blend_slices(
    plan: ResamplePlan,
    index: int,
    sources: Sequence[np.ndarray],
    fill: float,
) -> np.ndarray:
    """Compute output slice ``index`` of ``plan`` from its decoded source slices.

    Parameters
    ----------
    plan : ResamplePlan
        The plan.
    index : int
        Output slice number.
    sources : sequence of numpy.ndarray
        The decoded source slices named by ``plan.blends[index].sources``, in that order.
    fill : float
        Value for points outside every source slice.

    Returns
    -------
    numpy.ndarray
        float32 array of ``plan.shape``.
    """
    blend = plan.blends[index]
    names = blend.sources
    if len(sources) != len(names):
        raise ValueError(f"slice {index} needs {len(names)} source slices, got {len(sources)}")
    shifted = [shift_slice(s, plan.shifts_px[k], plan.shape, fill) for s, k in zip(
        sources, names, strict=True
    )]
    if len(shifted) == 1:
        return shifted[0]
    w = np.float32(blend.weight)
    return (1 - w) * shifted[0] + w * shifted[1]
