"""Head-CT preprocessing of the CT metastasis recipe: windowing, brain extraction, quality.

The recipe (docs/training-recipes.md) feeds its slice classifier with: brain extraction (HU
thresholding -50..100 plus morphology), the brain window (centre 40, width 80 HU), a z-score,
padding to a square, a resize to 256 x 256, and a quality filter. The brain extraction here
adds the skull as a constraint: soft tissue counts only inside the cranial cavity (the holes
of the bone mask, > 300 HU, after closing gaps in the skull), which keeps the scalp, face and
neck out. See ``docs/preprocessing.md``; :mod:`napari_neuroseg.preprocess.ct_input` chooses
the steps a model's sidecar asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from napari_neuroseg.preprocess.mri import zscore

__all__ = [
    "AIR_HU",
    "WINDOW_PRESETS",
    "SliceQuality",
    "brain_mask",
    "brain_mask_volume",
    "cranial_cavity",
    "extract_brain",
    "preprocess_ct_slice",
    "slice_quality",
    "window",
]

#: Named CT windows as (centre, width) in HU.
WINDOW_PRESETS = MappingProxyType(
    {"brain": (40.0, 80.0), "subdural": (75.0, 215.0), "bone": (600.0, 2800.0)}
)
AIR_HU = -1024.0
#: Skull gaps up to these radii (mm) are closed, smallest first, to find the cranial cavity.
SKULL_GAP_MM = (3.0, 6.0, 10.0)
#: A closing radius is enough once its cavity is this fraction of the largest radius' cavity.
STABLE_CAVITY = 0.8
#: Radius (mm) of the opening that cuts thin soft-tissue bridges (e.g. through foramina).
OPENING_MM = 2.0
#: Soft-tissue components smaller than this fraction of the largest one are dropped.
RELATIVE_COMPONENT = 0.1

Spacing = float | Sequence[float]
Progress = Callable[[int, int], None]


def window(hu: Any, center: float = 40.0, width: float = 80.0) -> Any:
    """Map HU to ``[0, 1]`` through a CT window (lazy for dask arrays).

    Parameters
    ----------
    hu : numpy.ndarray or dask.array.Array
        Values in Hounsfield units.
    center, width : float, optional
        Window centre and width in HU (see :data:`WINDOW_PRESETS`).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        float32 in ``[0, 1]``: 0 at ``center - width / 2`` and below, 1 at the top.
    """
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    hu = hu if hasattr(hu, "compute") else np.asarray(hu)
    low = np.float32(center - width / 2.0)
    return ((hu.astype(np.float32) - low) / np.float32(width)).clip(0.0, 1.0)


def _pixel_spacing(spacing: Spacing) -> tuple[float, float]:
    dy, dx = (spacing, spacing) if np.isscalar(spacing) else tuple(spacing)[-2:]
    if not (dy > 0 and dx > 0):
        raise ValueError(f"pixel spacing must be positive (mm), got {spacing}")
    return float(dy), float(dx)


def _as_slice(hu_slice: Any) -> np.ndarray:
    array = np.asarray(hu_slice, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected one 2-d CT slice in HU, got shape {array.shape}")
    return array


def _closing(mask: np.ndarray, radius: float, outside: np.ndarray,
             sampling: tuple[float, float]) -> np.ndarray:
    """Closing of ``mask`` with a disc of ``radius`` mm; ``outside`` is the EDT of ``~mask``."""
    grown = outside <= radius
    if grown.all():  # nothing left to erode from (and edt needs a background pixel)
        return grown
    # Padding with True ignores the image border, as morphology on a cropped scan should.
    distance = ndi.distance_transform_edt(np.pad(grown, 1, constant_values=True),
                                          sampling=sampling)
    return distance[1:-1, 1:-1] > radius


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``binary_fill_holes`` by labelling the background once (several times faster)."""
    background, _ = ndi.label(~mask)
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    return mask | ~np.isin(background, np.unique(edges[edges > 0])) & (background > 0)


def _opening(mask: np.ndarray, radius: float, sampling: tuple[float, float]) -> np.ndarray:
    core = ndi.distance_transform_edt(np.pad(mask, 1), sampling=sampling)[1:-1, 1:-1] > radius
    if not core.any():
        return core
    return ndi.distance_transform_edt(~core, sampling=sampling) <= radius


def cranial_cavity(bone: np.ndarray, spacing: Spacing = 1.0) -> np.ndarray:
    """The space enclosed by the skull in one slice (bone itself excluded).

    Gaps in the skull ring (sutures, foramina, thin bone) are closed with discs of increasing
    radius (:data:`SKULL_GAP_MM`); the smallest radius whose enclosed area is already
    :data:`STABLE_CAVITY` of the largest radius' area is used.

    Parameters
    ----------
    bone : numpy.ndarray
        ``(H, W)`` bool bone mask.
    spacing : float or (float, float), optional
        Pixel size in mm (row, column).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool.
    """
    sampling = _pixel_spacing(spacing)
    if not bone.any():
        return np.zeros(bone.shape, dtype=bool)
    outside = ndi.distance_transform_edt(~bone, sampling=sampling)

    def cavity(radius: float) -> np.ndarray:
        return _fill_holes(_closing(bone, radius, outside, sampling)) & ~bone

    widest = cavity(SKULL_GAP_MM[-1])
    enough = STABLE_CAVITY * widest.sum()
    for radius in SKULL_GAP_MM[:-1]:
        candidate = cavity(radius)
        if candidate.sum() >= enough:
            return candidate
    return widest


def brain_mask(
    hu_slice: np.ndarray,
    low: float = -50.0,
    high: float = 100.0,
    *,
    spacing: Spacing = 1.0,
    bone_hu: float = 300.0,
    min_area_mm2: float = 500.0,
) -> np.ndarray:
    """Brain (intracranial soft tissue) mask of one axial CT slice.

    Soft tissue (``low <= HU <= high``) inside the cranial cavity (:func:`cranial_cavity`
    of ``HU > bone_hu``), opened with a 2 mm disc; the largest connected component is kept
    together with components at least a tenth of its size (the skull base splits the brain
    into temporal lobes and posterior fossa); holes (ventricles, calcifications) are filled.

    Parameters
    ----------
    hu_slice : numpy.ndarray
        ``(H, W)`` slice in HU.
    low, high : float, optional
        Soft-tissue HU range (the recipe's -50..100).
    spacing : float or (float, float), optional
        Pixel size in mm (row, column); the radii and ``min_area_mm2`` are physical.
    bone_hu : float, optional
        Bone threshold in HU.
    min_area_mm2 : float, optional
        Smaller components are dropped (a slice below the skull or above the brain gives an
        empty mask).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool; all False when the slice holds no brain.
    """
    hu = _as_slice(hu_slice)
    sampling = _pixel_spacing(spacing)
    bone = hu > bone_hu
    mask = np.zeros(hu.shape, dtype=bool)
    box = _bone_box(bone, sampling)
    if box is not None:  # the brain lies inside the bone's bounding box: work there only
        soft = (hu[box] >= low) & (hu[box] <= high) & cranial_cavity(bone[box], sampling)
        mask[box] = _brain_components(soft, sampling, min_area_mm2)
    return mask


def _bone_box(bone: np.ndarray, sampling: tuple[float, float]) -> tuple[slice, slice] | None:
    rows, columns = np.flatnonzero(bone.any(axis=1)), np.flatnonzero(bone.any(axis=0))
    if rows.size == 0:
        return None
    margin_y, margin_x = (int(np.ceil(SKULL_GAP_MM[-1] / step)) + 2 for step in sampling)
    return (slice(max(rows[0] - margin_y, 0), rows[-1] + margin_y + 1),
            slice(max(columns[0] - margin_x, 0), columns[-1] + margin_x + 1))


def _brain_components(soft: np.ndarray, sampling: tuple[float, float], min_area_mm2: float
                      ) -> np.ndarray:
    """Opened soft tissue: the largest component and those at least a tenth of its size."""
    labels, count = ndi.label(_opening(soft, OPENING_MM, sampling))
    if count == 0:
        return np.zeros(soft.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    min_pixels = max(RELATIVE_COMPONENT * sizes.max(), min_area_mm2 / (sampling[0] * sampling[1]))
    kept = np.flatnonzero(sizes >= min_pixels) + 1
    return _fill_holes(np.isin(labels, kept))


def brain_mask_volume(
    volume: Any,
    low: float = -50.0,
    high: float = 100.0,
    *,
    spacing: Spacing = 1.0,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """:func:`brain_mask` slice by slice over a ``(z, y, x)`` volume.

    Parameters
    ----------
    volume : numpy.ndarray or dask.array.Array
        HU volume; a dask array is computed one slice at a time.
    low, high : float, optional
        Soft-tissue HU range.
    spacing : float or sequence of float, optional
        In-plane pixel size in mm; with three values ``(dz, dy, dx)`` the last two are used.
    on_progress : callable, optional
        Called as ``on_progress(done, total)`` after each slice.
    should_stop : callable, optional
        Polled before each slice; returning True stops the work.
    **kwargs
        More :func:`brain_mask` options (``bone_hu``, ``min_area_mm2``).

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` bool.

    Raises
    ------
    InterruptedError
        When ``should_stop`` asked to stop (no partial mask is returned).
    """
    if len(volume.shape) != 3:
        raise ValueError(f"brain_mask_volume needs a (z, y, x) volume, got shape {volume.shape}")
    total = volume.shape[0]
    masks = np.zeros(volume.shape, dtype=bool)
    for index in range(total):
        if should_stop is not None and should_stop():
            raise InterruptedError(f"brain_mask_volume stopped after {index} of {total} slices")
        masks[index] = brain_mask(np.asarray(volume[index]), low, high, spacing=spacing, **kwargs)
        if on_progress is not None:
            on_progress(index + 1, total)
    return masks


def extract_brain(
    hu_slice: np.ndarray,
    low: float = -50.0,
    high: float = 100.0,
    *,
    spacing: Spacing = 1.0,
    fill_value: float = AIR_HU,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The slice in HU with everything but the brain set to ``fill_value``.

    Parameters
    ----------
    hu_slice : numpy.ndarray
        ``(H, W)`` slice in HU.
    low, high, spacing : optional
        See :func:`brain_mask`.
    fill_value : float, optional
        HU given to non-brain pixels (air by default, so windowing maps it to 0).
    mask : numpy.ndarray, optional
        A brain mask already computed for this slice.

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)``.
    """
    hu = _as_slice(hu_slice)
    brain = brain_mask(hu, low, high, spacing=spacing) if mask is None else _mask_for(mask, hu)
    return np.where(brain, hu, np.float32(fill_value)).astype(np.float32)


def _mask_for(mask: Any, hu: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != hu.shape:
        raise ValueError(f"brain mask shape {mask.shape} does not match the slice {hu.shape}")
    return mask


def preprocess_ct_slice(
    hu: np.ndarray,
    size: int | tuple[int, int] = 256,
    *,
    spacing: Spacing = 1.0,
    center: float = 40.0,
    width: float = 80.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The recipe's model input: brain extraction, window 40/80, z-score in the brain, square
    padding, resize (:func:`napari_neuroseg.preprocess.ct_input.ct_model_input` calls it).

    Parameters
    ----------
    hu : numpy.ndarray
        ``(H, W)`` slice in HU.
    size : int or (int, int), optional
        Output edge (or height and width); a non-square slice is padded (centred, with the
        background value) to a square first so the anatomy keeps its aspect ratio.
    spacing : float or (float, float), optional
        Pixel size in mm (for the brain mask).
    center, width : float, optional
        CT window in HU.
    mask : numpy.ndarray, optional
        A brain mask already computed for this slice.

    Returns
    -------
    numpy.ndarray
        float32 ``(size, size)``: mean 0 and standard deviation 1 over the brain before the
        (bilinear, anti-aliased) resize; background at the z-score of window 0. All zeros
        when the slice holds no brain.
    """
    slice_hu = _as_slice(hu)
    brain = brain_mask(slice_hu, spacing=spacing) if mask is None else _mask_for(mask, slice_hu)
    windowed = window(extract_brain(slice_hu, mask=brain), center, width)
    windowed, brain = _pad_square(windowed), _pad_square(brain)
    standard = zscore(windowed, brain) if brain.any() else np.zeros_like(windowed)
    shape = (size, size) if np.isscalar(size) else tuple(size)
    return resize(standard, shape, order=1, anti_aliasing=True,
                  preserve_range=True).astype(np.float32)


def _pad_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape
    edge = max(height, width)
    top, left = (edge - height) // 2, (edge - width) // 2
    return np.pad(image, ((top, edge - height - top), (left, edge - width - left)))


class SliceQuality(NamedTuple):
    """Result of :func:`slice_quality`."""

    brain_fraction: float
    brain_area_mm2: float
    usable: bool


def slice_quality(
    hu_slice: np.ndarray,
    *,
    spacing: Spacing = 1.0,
    min_brain_fraction: float = 0.05,
    mask: np.ndarray | None = None,
) -> SliceQuality:
    """The recipe's slice filter: is there enough brain in the slice to classify?

    Slices through the skull base or the vertex hold little brain and are dropped. Nothing
    penalises asymmetry, so slices with a one-sided lesion are kept (as in the recipe).

    Parameters
    ----------
    hu_slice : numpy.ndarray
        ``(H, W)`` slice in HU.
    spacing : float or (float, float), optional
        Pixel size in mm.
    min_brain_fraction : float, optional
        Usable when the brain covers at least this fraction of the image.
    mask : numpy.ndarray, optional
        A brain mask already computed for this slice.

    Returns
    -------
    SliceQuality
        ``brain_fraction`` of the image, ``brain_area_mm2`` and ``usable``.
    """
    hu = _as_slice(hu_slice)
    brain = brain_mask(hu, spacing=spacing) if mask is None else _mask_for(mask, hu)
    dy, dx = _pixel_spacing(spacing)
    fraction = float(brain.mean())
    return SliceQuality(fraction, float(brain.sum() * dy * dx), fraction >= min_brain_fraction)
