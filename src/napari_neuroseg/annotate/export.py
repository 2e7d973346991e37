"""Corrections to training data: plan dataset items, validate them all, then write them.

Every export goes through three steps. A *plan* function turns labels and the image they
belong to into :class:`ExportItem` s (nothing is read yet: the image pixels are read lazily
when the item is written); :func:`validate_export` checks every item, and the dataset folder
it would extend, before anything is written; :func:`write_export` hands the items one by one
to :class:`~napari_neuroseg.dataset.DatasetWriter`, which writes each item's files under
temporary names and rewrites the manifest atomically after each, so a crash or an
interruption leaves a dataset that opens with the items completed so far. Exporting the same
region (or slice) of the same source again replaces the earlier item instead of adding one.
:func:`export_items` does all three.

Slide regions: the labels sit on a *working grid* of the slide (a pyramid level, or a level
resampled to the model's µm/px exactly as the tile engine does it, see
:func:`napari_neuroseg.engine.choose_level`). The item's ``region`` records the pyramid
level read, the offset and size on the working grid and its µm/px; ``extra.downsample`` is
level-0 pixels per working pixel.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_neuroseg.dataset import TASK_RULES, Dataset, DatasetError, DatasetWriter
from napari_neuroseg.dataset.convert_nuclei import tile_has_nucleus
from napari_neuroseg.dataset.layout import check_label, check_mask_values
from napari_neuroseg.dataset.manifest import MANIFEST_NAME, parse_class_map
from napari_neuroseg.dataset.writer import MPP_TOLERANCE
from napari_neuroseg.engine import Region, choose_level
from napari_neuroseg.engine.tiling import read_window
from napari_neuroseg.io import LazyImage

__all__ = [
    "EXPORT_TASKS",
    "ExportItem",
    "ExportReport",
    "SlideRegion",
    "export_items",
    "label_store_items",
    "nuclei_tile_items",
    "slide_items",
    "slide_region",
    "validate_export",
    "volume_items",
    "write_export",
]

#: Tasks the plugin exports and the modality they are written with by default.
EXPORT_TASKS = {"tissue": "HE", "nuclei": "HE", "nuclei-tiles": "HE", "mri": "MR", "ct": "CT"}
#: How far (in working pixels) a labels layer may sit off the slide's pixel grid.
GRID_TOLERANCE = 0.05


@dataclass
class ExportItem:
    """One dataset item to write: a lazy image, its mask or label, and its provenance.

    Attributes
    ----------
    read_image : callable
        Returns the ``(h, w)`` or ``(h, w, c)`` image (called only when writing).
    shape : tuple of int
        The image's shape (known without reading it).
    dtype : numpy.dtype
    mask : numpy.ndarray or None
    label : int or None
    meta : dict
        Keyword arguments of :meth:`DatasetWriter.add` (ids, source, region, flags).
    where : str
        Names the item in error messages (``"slice 12"``, ``"region y 0:512, x 0:512"``).
    """

    read_image: Callable[[], np.ndarray]
    shape: tuple[int, ...]
    dtype: np.dtype
    mask: np.ndarray | None = None
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    where: str = "item"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`write_export` did.

    Attributes
    ----------
    path : Path
    added, replaced : int
        New items, and items that replaced an earlier export of the same region.
    item_ids : tuple of str
        Ids of the items written, in order.
    stopped : bool
        Whether ``should_stop`` ended the export early (the items written stay).
    """

    path: Path
    added: int
    replaced: int
    item_ids: tuple[str, ...]
    stopped: bool = False


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
        paths = [Path(f) if Path(f).is_absolute() else folder / f for f in files]
        if all(p.is_file() for p in paths):
            return [{"source_path": str(p)} for p in paths]
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
        Export only these slices (default all).
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
    for k in range(depth) if slices is None else [int(s) for s in slices]:
        if not 0 <= k < depth:
            raise DatasetError(f"slice {k} is outside the volume (0-{depth - 1})")

        def read(k: int = k) -> np.ndarray:
            return _as_dtype(np.asarray(level[k]), dtype)

        mask = None if labels is None or task == "ct" else np.asarray(labels[k])
        label = None if slice_labels is None else int(slice_labels[k])
        items.append(ExportItem(read, tuple(int(v) for v in level.shape[1:]), dtype, mask,
                                label, {**meta, **sources[k], "slice_index": k},
                                f"slice {k} of {image.name}"))
    return items


def _ct_dtype(level: Any) -> np.dtype:
    """int16 HU when the values are whole numbers (as the CT converter stores them)."""
    kind = np.dtype(level.dtype)
    return np.dtype(np.int16) if kind.kind in "iu" and kind.itemsize <= 2 else np.dtype(
        np.float32)


# -- validate and write -----------------------------------------------------------------------
def validate_export(items: Sequence[ExportItem], path: str | os.PathLike[str], task: str,
                    modality: str, class_map: Mapping[int, str]) -> dict[int, str]:
    """Check every item, and the dataset the items would join, before anything is written.

    Returns
    -------
    dict of int to str
        The parsed class map.

    Raises
    ------
    DatasetError
        Naming the item and the problem: an unknown task, an invalid class map, no items,
        a mask whose shape differs from its image, class ids outside the class map, an
        empty mask where the task forbids it, a missing or unknown label, µm/px or channel
        counts differing between items or from the existing dataset, an existing dataset
        of another task / modality / class map, or a folder that is not a dataset.
    """
    if task not in TASK_RULES or task not in EXPORT_TASKS:
        raise DatasetError(f"unknown export task {task!r}; known: {sorted(EXPORT_TASKS)}")
    classes = parse_class_map(dict(class_map), "class map")
    rule = TASK_RULES[task]
    if not items:
        raise DatasetError("nothing to export (no items)")
    root = Path(path)
    existing: list[Any] = []
    if (root / MANIFEST_NAME).is_file():
        data = Dataset.open(root, check_pixels=False)
        if (data.task, data.modality, data.class_map) != (task, modality, classes):
            raise DatasetError(
                f"{root} holds task {data.task!r}, modality {data.modality!r}, classes "
                f"{data.class_map}; this export is task {task!r}, modality {modality!r}, "
                f"classes {classes}: choose another dataset folder")
        existing = [(tuple(i.shape[2:]), i.region.get("mpp"), f"item {i.id!r}")
                    for i in data.items]
    elif root.is_dir() and any(root.iterdir()):
        raise DatasetError(f"{root} is not empty and holds no {MANIFEST_NAME}: choose an empty "
                           "or new folder, or an existing dataset")
    for item in items:
        where = item.where
        if len(item.shape) not in (2, 3) or np.dtype(item.dtype).kind not in "uif":
            raise DatasetError(f"{where}: image must be a numeric (h, w) or (h, w, c) array, "
                               f"found {item.dtype} {item.shape}")
        check_label(item.label, classes, rule, where)
        if item.mask is None:
            if rule.mask is not None:
                raise DatasetError(f"{where}: task {task!r} needs a mask")
        else:
            if tuple(item.mask.shape) != tuple(item.shape[:2]):
                raise DatasetError(f"{where}: mask shape {item.mask.shape} differs from image "
                                   f"shape {item.shape[:2]}")
            check_mask_values(item.mask, classes, rule, where)
        existing.append((tuple(item.shape[2:]), item.meta.get("mpp"), where))
    _check_uniform(existing)
    return classes


def _check_uniform(entries: list[tuple[tuple[int, ...], float | None, str]]) -> None:
    channels, first = entries[0][0], entries[0][2]
    known = next(((m, w) for _, m, w in entries if m), None)
    for shape, mpp, where in entries:
        if shape != channels:
            raise DatasetError(f"{where}: image has {list(shape) or 'no'} channels, {first} "
                               f"has {list(channels) or 'no'}")
        if known and mpp and abs(mpp - known[0]) > MPP_TOLERANCE * known[0]:
            raise DatasetError(f"{where}: {mpp:g} µm/px differs from {known[0]:g} µm/px of "
                               f"{known[1]} (mixed resolutions in one dataset); export at "
                               "the dataset's resolution or into another dataset")


def _pixel_hash(image: np.ndarray) -> str:
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def write_export(items: Sequence[ExportItem], path: str | os.PathLike[str], task: str,
                 modality: str, class_map: Mapping[int, str], *,
                 on_progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> ExportReport:
    """Write validated items with :class:`DatasetWriter` (one manifest commit per item).

    Items without a source file get the SHA-256 of their image pixels as source hash
    (``extra.source_hash = "pixels"``), so exporting them again still replaces them.
    """
    writer = DatasetWriter(path, task, modality, dict(class_map))
    before = {item.id for item in writer.items}
    ids: list[str] = []
    added = replaced = 0
    stopped = False
    for n, item in enumerate(items):
        if should_stop is not None and should_stop():
            stopped = True
            break
        image = item.read_image()
        meta = dict(item.meta)
        if "source_path" not in meta and "source_sha256" not in meta:
            meta["source_sha256"] = _pixel_hash(image)
            meta["extra"] = {**meta.get("extra", {}), "source_hash": "pixels"}
        item_id = writer.add(image, item.mask, item.label, **meta)
        replaced += item_id in before or item_id in ids
        added += not (item_id in before or item_id in ids)
        ids.append(item_id)
        if on_progress is not None:
            on_progress(n + 1, len(items))
    writer.flush()
    return ExportReport(Path(path), added, replaced, tuple(ids), stopped)


def export_items(items: Sequence[ExportItem], path: str | os.PathLike[str], task: str,
                 class_map: Mapping[int, str], *, modality: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> ExportReport:
    """Validate all items (writing nothing if one is bad), then write them.

    Parameters
    ----------
    items : sequence of ExportItem
        From :func:`slide_items`, :func:`volume_items`, :func:`nuclei_tile_items`...
    path : str or os.PathLike
        The dataset folder (created, or extended when it holds a dataset of this task).
    task : {"tissue", "nuclei", "nuclei-tiles", "mri", "ct"}
    class_map : mapping of int to str
    modality : str, optional
        Default from :data:`EXPORT_TASKS` (``HE``, ``MR``, ``CT``).
    on_progress : callable, optional
        ``(done, total)`` after each item.
    should_stop : callable, optional
        Checked before each item; the items written so far stay (``stopped=True``).

    Returns
    -------
    ExportReport
    """
    modality = modality or EXPORT_TASKS.get(task, "")
    classes = validate_export(items, path, task, modality, class_map)
    return write_export(items, path, task, modality, classes, on_progress=on_progress,
                        should_stop=should_stop)

