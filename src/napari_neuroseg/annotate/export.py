"""Corrections to training data: plan dataset items, validate them all, then write them.

Every export goes through three steps. A *plan* function
(:mod:`napari_neuroseg.annotate.export_plan`) turns labels and the image they belong to into
:class:`ExportItem` s (nothing is read yet: the image pixels are read lazily
when the item is written); :func:`validate_export` checks every item, and the dataset folder
it would extend, before anything is written; :func:`write_export` hands the items one by one
to :class:`~napari_neuroseg.dataset.DatasetWriter`, which writes each item's files under
temporary names and rewrites the manifest atomically after each, so a crash or an
interruption leaves a dataset that opens with the items completed so far. Exporting the same
region (or slice) of the same source again replaces the earlier item instead of adding one.
:func:`export_items` does all three.
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
from napari_neuroseg.dataset.layout import check_label, check_mask_values
from napari_neuroseg.dataset.manifest import MANIFEST_NAME, parse_class_map
from napari_neuroseg.dataset.tasks import EXPORT_MODALITIES
from napari_neuroseg.dataset.writer import MPP_TOLERANCE

__all__ = [
    "EXPORT_TASKS",
    "ExportItem",
    "ExportReport",
    "export_items",
    "validate_export",
    "write_export",
]

#: Tasks the plugin exports and the modality they are written with by default.
EXPORT_TASKS: Mapping[str, str] = EXPORT_MODALITIES


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
        From the plan functions of :mod:`~napari_neuroseg.annotate.export_plan`.
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

