"""Plan dataset items from labels: slide regions, label stores, volumes and nuclei tiles.

The first step of an export (see :mod:`napari_neuroseg.annotate.export`): each function turns
labels and the image they belong to into :class:`~napari_neuroseg.annotate.export.ExportItem`
s, reading no pixels (an item reads its image only when it is written).

Slide regions: the labels sit on a *working grid* of the slide (a pyramid level, or a level
resampled to the model's µm/px exactly as the tile engine does it, see
:func:`napari_neuroseg.engine.choose_level`). The item's ``region`` records the pyramid
level read, the offset and size on the working grid and its µm/px; ``extra.downsample`` is
level-0 pixels per working pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_neuroseg.annotate.export import ExportItem
from napari_neuroseg.dataset import DatasetError
from napari_neuroseg.dataset.convert_nuclei import tile_has_nucleus
from napari_neuroseg.engine import Region, choose_level
from napari_neuroseg.engine.tiling import read_window
from napari_neuroseg.io import LazyImage

__all__ = [
    "GRID_TOLERANCE",
    "SlideRegion",
    "label_store_items",
    "nuclei_tile_items",
    "slide_items",
    "slide_region",
    "volume_items",
]

#: How far (in working pixels) a labels layer may sit off the slide's pixel grid.
GRID_TOLERANCE = 0.05


# -- slides -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlideRegion:
    """Where a labels array sits on a slide.

    Attributes
    ----------
    level : int
        The pyramid level read (resampled by ``factor`` when it is not the working grid).
    factor : float
        Working pixel size / level pixel size (1.0: the level is the working grid).
    offset : (int, int)
        ``(y, x)`` of the labels' first pixel on the working grid.
    mpp : float
        µm per working pixel.
    downsample : float
        Level-0 pixels per working pixel (what GeoJSON coordinates are scaled by).
    """

    level: int
    factor: float
    offset: tuple[int, int]
    mpp: float
    downsample: float


def slide_region(image: LazyImage, scale: Sequence[float],
                 translate: Sequence[float]) -> SlideRegion:
    """The :class:`SlideRegion` of a labels layer with napari ``scale`` and ``translate``.

    The working grid is the one :func:`napari_neuroseg.analysis.plan_slide` and the label
    store use: pixel (0, 0) centred half a working pixel (less half a level-0 pixel) past
    the slide's origin.

    Raises
    ------
    DatasetError
        If the labels are not aligned with that grid (an offset that is not whole pixels).
    """
    base = float(image.scale[-1])
    s = float(scale[-1])
    choice = choose_level([base * d for d in image.downsamples()], s)
    grid_scale, grid_translate = choice.geometry(tuple(image.translate or (0.0, 0.0))[-2:])
    offset = []
    for t, g in zip(tuple(translate)[-2:], grid_translate, strict=True):
        o = (float(t) - g) / grid_scale[0]
        if abs(o - round(o)) > GRID_TOLERANCE:
            raise DatasetError(f"the labels sit {o:.2f} working pixels from the slide's origin: "
                               "not on the slide's pixel grid at this resolution")
        offset.append(round(o))
    return SlideRegion(choice.level, choice.factor, (offset[0], offset[1]), choice.working_mpp,
                       choice.working_mpp / base)


def _working_array(image: LazyImage, region: SlideRegion) -> Any:
    level = image.levels[region.level]
    if region.factor == 1.0:
        return level
    from napari_neuroseg.engine import ResampledArray

    return ResampledArray(level, region.factor)


def _as_dtype(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype).kind in "ui" and data.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    return data.astype(dtype, copy=False)


def _source(image: LazyImage) -> dict[str, Any]:
    """``source_path`` when the image comes from a file (its SHA-256 is then computed)."""
    path = Path(image.source)
    return {"source_path": str(path)} if path.is_file() else {}


def slide_items(image: LazyImage, labels: np.ndarray, region: SlideRegion, *,
                task: str = "tissue", slide_id: str | None = None,
                patient_id: str | None = None, corrected_by_person: bool = True,
                crop: tuple[slice, slice] | None = None) -> list[ExportItem]:
    """One item for the labels of a slide region (``tissue`` or ``nuclei`` instance labels).

    Parameters
    ----------
    image : LazyImage
        The slide (``"yxc"`` or ``"yx"``).
    labels : numpy.ndarray
        ``(h, w)`` class ids, or instance ids for task ``nuclei``.
    region : SlideRegion
        From :func:`slide_region`.
    task : {"tissue", "nuclei"}
    slide_id, patient_id : str, optional
        ``slide_id`` defaults to the image name.
    corrected_by_person : bool
    crop : (slice, slice), optional
        Export only this part of ``labels``.

    Returns
    -------
    list of ExportItem
        One item (the labels clipped to the slide; nothing outside the slide is exported).

    Raises
    ------
    DatasetError
        If the labels are not 2-D or lie entirely outside the slide.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DatasetError(f"slide labels must be 2-D, got shape {labels.shape}")
    oy, ox = region.offset
    if crop is not None:
        labels = labels[crop]
        oy, ox = oy + (crop[0].start or 0), ox + (crop[1].start or 0)
    array = _working_array(image, region)
    h, w = int(array.shape[0]), int(array.shape[1])
    box = Region(max(oy, 0), max(ox, 0), min(oy + labels.shape[0], h),
                 min(ox + labels.shape[1], w))
    if box.y1 <= box.y0 or box.x1 <= box.x0:
        raise DatasetError(f"the labels (offset {oy}, {ox}, shape {labels.shape}) lie outside "
                           f"the slide's {h} x {w} working grid")
    mask = labels[box.y0 - oy:box.y1 - oy, box.x0 - ox:box.x1 - ox]
    dtype = np.dtype(image.levels[region.level].dtype)

    def read() -> np.ndarray:
        return _as_dtype(np.asarray(read_window(array, box)), dtype)

    meta = {"slide_id": slide_id or image.name, "patient_id": patient_id, **_source(image),
            "level": region.level, "offset": box.start, "size": box.shape, "mpp": region.mpp,
            "corrected_by_person": corrected_by_person,
            "extra": {"downsample": region.downsample, "resampled": region.factor != 1.0,
                      **({"n_nuclei": len(np.unique(mask[mask > 0]))}
                         if task == "nuclei" else {})}}
    return [ExportItem(read, (*box.shape, *array.shape[2:]), dtype, mask, None, meta,
                       f"region {box} of {image.name}")]


def nuclei_tile_items(item: ExportItem, tile_size: int = 256) -> list[ExportItem]:
    """Cut a ``nuclei`` item into ``nuclei-tiles`` items labelled NUCLEI / NO_NUCLEUS.

    A square is NUCLEI (1) when at least one nucleus has at least half of its area inside
    it (the rule of :func:`napari_neuroseg.dataset.convert_nuclei_tiles`); squares that do
    not fit at the right and bottom edges are dropped. The image is read once for all.
    """
    if item.mask is None:
        raise DatasetError(f"{item.where}: nuclei tiles need instance labels")
    labels = item.mask.astype(np.int64)
    areas = np.bincount(labels.ravel())
    h, w = labels.shape
    cache: dict[str, np.ndarray] = {}
    oy, ox = item.meta.get("offset", (0, 0))
    out = []
    for y in range(0, h - tile_size + 1, tile_size):
        for x in range(0, w - tile_size + 1, tile_size):
            window = (slice(y, y + tile_size), slice(x, x + tile_size))
            has, count = tile_has_nucleus(labels, window, areas)

            def read(window: tuple[slice, slice] = window) -> np.ndarray:
                if "image" not in cache:
                    cache["image"] = item.read_image()
                return cache["image"][window]

            meta = {**item.meta, "offset": (oy + y, ox + x), "size": (tile_size, tile_size),
                    "extra": {**item.meta.get("extra", {}), "n_nuclei": count}}
            out.append(ExportItem(read, (tile_size, tile_size, *item.shape[2:]), item.dtype,
                                  None, int(has), meta, f"tile y {y}, x {x} of {item.where}"))
    if not out:
        raise DatasetError(f"{item.where}: {h} x {w} is smaller than one {tile_size}-px tile")
    return out


def label_store_items(image: LazyImage, store: Any, *, task: str = "tissue",
                      slide_id: str | None = None, patient_id: str | None = None,
                      only_corrected: bool = False) -> list[ExportItem]:
    """One item per committed region of a label store (``annotate.labelstore.LabelStore``).

    Each region keeps its own ``corrected_by_person`` flag; ``only_corrected`` skips regions
    seeded from a model and committed unchanged.
    """
    region = slide_region(image, store.scale, store.translate)
    items = []
    for committed in store.regions():
        if only_corrected and not committed.corrected_by_person:
            continue
        r = committed.region
        items += slide_items(image, store.read(r), SlideRegion(
            region.level, region.factor, (region.offset[0] + r.y0, region.offset[1] + r.x0),
            region.mpp, region.downsample), task=task, slide_id=slide_id,
            patient_id=patient_id, corrected_by_person=committed.corrected_by_person)
    return items


# -- volumes ----------------------------------------------------------------------------------
def _slice_sources(image: LazyImage, depth: int) -> list[dict[str, Any]]:
    """Per-slice ``source_path`` (a file per slice: DICOM, Kaggle LGG), else the volume file."""
    files = image.metadata.get("files") or []
    root = Path(image.source)
    folder = root if root.is_dir() else root.parent
    if len(files) == depth:
        paths = [None if f is None else Path(f) if Path(f).is_absolute() else folder / f
                 for f in files]
        if all(p is None or p.is_file() for p in paths):
            return [_source(image) if p is None else {"source_path": str(p)} for p in paths]
    return [_source(image)] * depth


def volume_items(image: LazyImage, *, task: str, labels: np.ndarray | None = None,
                 slice_labels: Sequence[int] | None = None, patient_label: int | None = None,
                 patient_id: str | None = None,
                 series_id: str | None = None, corrected_by_person: bool = True,
                 slices: Sequence[int] | None = None) -> list[ExportItem]:
    """One item per slice of an MRI or CT volume.

    Parameters
    ----------
    image : LazyImage
        ``"zyx"`` or ``"zyxc"``; its ``scale`` is the voxel spacing ``[dz, dy, dx]`` (mm).
    task : {"mri", "ct"}
    labels : numpy.ndarray, optional
        ``(z, y, x)`` class ids (``mri``: required; empty slices are kept as negatives).
    slice_labels : sequence of int, optional
        One class id per slice (``ct``: required).
    patient_label : int, optional
        The patient's label (``ct``), kept in ``extra.patient_label``. Training takes a
        patient's label as the maximum over its slices, so it must equal that maximum.
    patient_id : str, optional
        Defaults to ``metadata["patient_id"]``.
    series_id : str, optional
        Stored as ``slide_id``; defaults to ``metadata["series_uid"]`` or the image name.
    corrected_by_person : bool
    slices : sequence of int, optional
        Export only these planes (default all). Planes listed in ``metadata["absent_slices"]``
        (gaps in a Kaggle LGG patient's slice numbers, shown as empty planes) are skipped.
        Each item's ``slice_index`` is the plane's ``metadata["slice_numbers"]`` entry when
        the reader gives one (the slice's own number), else the plane index.
    """
    depth = int(image.shape[0])
    if task == "mri" and labels is None:
        raise DatasetError("task 'mri' needs a labels volume (one mask per slice)")
    if task == "ct" and (slice_labels is None or len(slice_labels) != depth):
        raise DatasetError(f"task 'ct' needs one label per slice ({depth} slices), got "
                           f"{None if slice_labels is None else len(slice_labels)}")
    if (patient_label is not None and slice_labels is not None and len(slice_labels)
            and int(max(slice_labels)) != int(patient_label)):
        raise DatasetError(f"patient label {patient_label} but the slice labels' maximum is "
                           f"{max(slice_labels)}: training reads the patient's label as that "
                           "maximum, so label at least one slice (or change the patient label)")
    if labels is not None and tuple(np.shape(labels)) != tuple(image.shape[:3]):
        raise DatasetError(f"labels of shape {tuple(np.shape(labels))} do not match the "
                           f"{tuple(image.shape[:3])} volume {image.name}")
    level = image.levels[0]
    dtype = np.dtype(level.dtype) if task != "ct" else _ct_dtype(level)
    sources = _slice_sources(image, depth)
    meta = {"patient_id": patient_id or image.metadata.get("patient_id"),
            "slide_id": series_id or image.metadata.get("series_uid") or image.name,
            "spacing_mm": [float(v) for v in image.scale],
            "corrected_by_person": corrected_by_person,
            "extra": {} if patient_label is None else {"patient_label": int(patient_label)}}
    items = []
    absent = set(image.metadata.get("absent_slices") or ())
    numbers = image.metadata.get("slice_numbers") or []
    for k in range(depth) if slices is None else [int(s) for s in slices]:
        if not 0 <= k < depth:
            raise DatasetError(f"slice {k} is outside the volume (0-{depth - 1})")
        if k in absent:  # a gap in the slice numbers: no image to export
            continue

        def read(k: int = k) -> np.ndarray:
            return _as_dtype(np.asarray(level[k]), dtype)

        mask = None if labels is None or task == "ct" else np.asarray(labels[k])
        label = None if slice_labels is None else int(slice_labels[k])
        items.append(ExportItem(read, tuple(int(v) for v in level.shape[1:]), dtype, mask,
                                label, {**meta, **sources[k], "slice_index":
                                        int(numbers[k]) if len(numbers) == depth else k},
                                f"slice {k} of {image.name}"))
    return items


def _ct_dtype(level: Any) -> np.dtype:
    """int16 HU when the values are whole numbers (as the CT converter stores them)."""
    kind = np.dtype(level.dtype)
    return np.dtype(np.int16) if kind.kind in "iu" and kind.itemsize <= 2 else np.dtype(
        np.float32)
