"""A quick preview of the nuclei of a region: the classical method, before the network.

HoVer-Net over a whole screen at 0.5 µm/px takes seconds on a CPU; the classical
hematoxylin watershed (:mod:`napari_neuroseg.analysis.nuclei_classical`) is several times
faster and gives nuclear instances of the same kind. :func:`preview_nuclei` runs it over the
region the model will analyse (same capping, same working grid), on every ``step``-th pixel
when the region is larger than ``max_pixels`` (nuclei are still several pixels across at
1 µm/px), and returns a :class:`~napari_neuroseg.analysis.results.NucleiResult` aligned like
the model's, whose ``preview`` says what it is. It is not the model: the widgets show it
as a preview until the model's result replaces it.
"""

from __future__ import annotations

import math

import numpy as np

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions, classical_nuclei
from napari_neuroseg.analysis.region import DEFAULT_MAX_SIZE, cap_region
from napari_neuroseg.analysis.results import NucleiResult
from napari_neuroseg.analysis.slide import SlidePlan
from napari_neuroseg.engine import Region, TileCounts
from napari_neuroseg.engine.stitch import world_offset
from napari_neuroseg.engine.tiling import read_window

__all__ = ["MAX_NUCLEUS_DISCS", "PREVIEW_MAX_PIXELS", "drop_large", "preview_nuclei",
           "preview_step"]

#: Working pixels the classical method runs on at full resolution (about 0.5 s on one core).
PREVIEW_MAX_PIXELS = 640 * 512
#: Instances larger than this many nucleus discs (``nucleus_radius_um``) are left out.
MAX_NUCLEUS_DISCS = 4.0


def drop_large(labels: np.ndarray, max_pixels: float) -> np.ndarray:
    """``labels`` without the instances larger than ``max_pixels``, renumbered 1..n.

    The watershed merges dense stroma or overlapping nuclei into blobs many nuclei wide; a
    preview leaves them out rather than show them as one nucleus.
    """
    areas = np.bincount(labels.ravel())
    keep = areas <= max_pixels
    keep[0] = True
    ids = np.zeros(len(areas), np.int32)
    kept = np.flatnonzero(keep[1:] & (areas[1:] > 0)) + 1
    ids[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return ids[labels]


def preview_step(shape: tuple[int, int], max_pixels: int = PREVIEW_MAX_PIXELS) -> int:
    """The subsampling step (1, 2, 3, ...) that brings ``shape`` under ``max_pixels``."""
    pixels = max(1, shape[0] * shape[1])
    return max(1, math.ceil(math.sqrt(pixels / max(1, max_pixels))))


def preview_nuclei(plan: SlidePlan, region: Region | None = None, *,
                   max_size: int = DEFAULT_MAX_SIZE,
                   max_pixels: int = PREVIEW_MAX_PIXELS) -> NucleiResult:
    """Nuclear instances of ``region`` by the classical method, on the model's working grid.

    Parameters
    ----------
    plan : SlidePlan
        The nuclei model's plan (its working level and geometry are used; the model is not).
    region : Region, optional
        Level-0 pixels; the whole slide when None. Capped to ``max_size`` working pixels as
        :func:`~napari_neuroseg.analysis.region.segment_nuclei` caps it.
    max_size : int
        Largest side of the analysed region in working pixels.
    max_pixels : int
        Above this many working pixels, every ``step``-th pixel is segmented
        (:func:`preview_step`) and the labels are repeated back onto the working grid.

    Returns
    -------
    NucleiResult
        int32 labels over the same working region the model would analyse, ``preview``
        describing the method and resolution, no tile counts and no types.
    """
    full = Region(0, 0, int(plan.image.shape[0]), int(plan.image.shape[1]))
    region, capped = cap_region(region or full, plan, max_size)
    working = plan.choice.region_from_base(region, plan.working_shape)
    step = preview_step(working.shape, max_pixels)
    rgb = np.asarray(read_window(plan.array, working))[::step, ::step, :3]
    mpp = plan.choice.working_mpp * step
    options = ClassicalNucleiOptions(mpp=mpp)
    small = drop_large(classical_nuclei(rgb, options),
                       MAX_NUCLEUS_DISCS * math.pi * (options.nucleus_radius_um / mpp) ** 2)
    labels = np.repeat(np.repeat(small, step, axis=0), step, axis=1)
    labels = np.ascontiguousarray(labels[:working.shape[0], :working.shape[1]])
    notes = list(plan.notes)
    if capped:
        notes.append(f"view larger than {max_size} x {max_size} working pixels: only its "
                     "centre was analysed (zoom in for the rest)")
    return NucleiResult(
        data=labels, scale=tuple(plan.scale),
        translate=world_offset(plan.translate, plan.scale, working.start),  # type: ignore[arg-type]
        region=region, working_region=working, mpp=plan.choice.working_mpp,
        unit=plan.image.unit, counts=TileCounts(), capped=capped, notes=notes,
        preview=f"classical hematoxylin watershed at {mpp:.3g} µm/px, not the model")
