"""Write a dataset incrementally and crash-safely: :class:`DatasetWriter`.

Every :meth:`DatasetWriter.add` validates first and writes nothing when the item is bad. Files
go to a temporary name and are renamed into place; the manifest is rewritten atomically after
them, so at any instant the manifest only lists items whose files are complete. Adding the same
source region again (same source SHA-256, level, offset and size) replaces the earlier item:
its new files get fresh names and the old ones are deleted only after the manifest no longer
refers to them.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..io._atomic import atomic_path
from .layout import Dataset, check_label, check_mask_values
from .manifest import (
    MANIFEST_NAME,
    DatasetError,
    Item,
    check_item_id,
    header_json,
    now_iso,
    parse_class_map,
    safe_id,
    sha256_file,
)
from .tasks import TASK_RULES

#: Relative tolerance between the µm/px of items of one dataset.
MPP_TOLERANCE = 0.02


def _write_tiff(path: Path, array: np.ndarray) -> None:
    """Write a zlib-compressed TIFF atomically."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression="zlib", compressionargs={"level": 1})


def _mask_array(mask: np.ndarray, kind: str | None) -> np.ndarray:
    """The mask in its stored dtype (smallest unsigned type holding its ids)."""
    top = int(mask.max()) if mask.size else 0
    if kind == "instance":
        return mask.astype(np.uint16 if top < 2**16 else np.uint32)
    return mask.astype(np.uint8 if top < 2**8 else np.uint16)


class DatasetWriter:
    """Create or extend a dataset folder.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset folder; created if needed. An existing dataset is extended: its task,
        modality and class map must equal the ones given.
    task : str
        One of :data:`~napari_neuroseg.dataset.tasks.TASK_NAMES`.
    modality : str
        E.g. ``"MR"``, ``"CT"``, ``"HE"``, ``"IHC"``.
    class_map : mapping of int to str
        Class id to name.
    flush_every : int
        Rewrite the manifest after this many adds (1: after every add). Items added since the
        last flush are lost by a crash, never the earlier ones. Converters use larger values;
        :meth:`flush` (or leaving a ``with`` block) writes the rest.

    Raises
    ------
    DatasetError
        If the task is unknown, the class map is invalid, or an existing dataset differs.
    """

    def __init__(self, path: str | os.PathLike[str], task: str, modality: str,
                 class_map: dict[int, str], *, flush_every: int = 1) -> None:
        if task not in TASK_RULES:
            raise DatasetError(f"unknown task {task!r}; known: {sorted(TASK_RULES)}")
        self.path = Path(path)
        self.task = task
        self.modality = modality
        self.class_map = parse_class_map(dict(class_map), "class_map")
        self.rule = TASK_RULES[task]
        self.flush_every = max(1, int(flush_every))
        self._items: list[Item] = []
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._doomed: list[Path] = []
        self._pending = 0
        self.created = now_iso()
        if (self.path / MANIFEST_NAME).is_file():
            self._extend_existing()
        else:
            for sub in ("", "images", "masks"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            self._write_manifest()

    def _extend_existing(self) -> None:
        existing = Dataset.open(self.path, check_pixels=False)
        theirs = (existing.task, existing.modality, existing.class_map)
        if theirs != (self.task, self.modality, self.class_map):
            raise DatasetError(
                f"{self.path}: existing dataset is task {existing.task!r}, modality "
                f"{existing.modality!r}, classes {existing.class_map}; cannot add task "
                f"{self.task!r}, modality {self.modality!r}, classes {self.class_map}"
            )
        self._items = list(existing.items)
        self.created = existing.created or self.created
        for sub in ("images", "masks"):
            (self.path / sub).mkdir(exist_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    @property
    def items(self) -> tuple[Item, ...]:
        """The items so far (including any not flushed yet)."""
        return tuple(self._items)

    def add(self, image: np.ndarray, mask: np.ndarray | None = None, label: int | None = None,
            *, item_id: str | None = None, patient_id: str | None = None,
            slide_id: str | None = None, source_path: str | os.PathLike[str] | None = None,
            source_sha256: str | None = None, level: int = 0,
            offset: Sequence[int] = (0, 0), size: Sequence[int] | None = None,
            mpp: float | None = None, spacing_mm: Sequence[float] | None = None,
            corrected_by_person: bool = False, split: str | None = None,
            domain: str | None = None, slice_index: int | None = None,
            extra: dict[str, Any] | None = None) -> str:
        """Validate and add one image (and its mask or label); return its item id.

        Parameters
        ----------
        image : numpy.ndarray
            ``(h, w)`` or ``(h, w, c)`` with c <= 4; stored with its dtype (HU for CT).
        mask : numpy.ndarray, optional
            ``(h, w)`` integer class ids (semantic tasks) or instance ids (``nuclei``).
        label : int, optional
            Class id of the whole image (``ct``, ``nuclei-tiles``).
        item_id : str, optional
            Default ``<patient or slide or "item">_<n>``.
        patient_id, slide_id, source_path, source_sha256 : optional
            Provenance; the SHA-256 is computed from ``source_path`` when not given.
        level, offset, size, mpp, spacing_mm : optional
            The region of the source: pyramid level, ``[y, x]`` offset and ``[h, w]`` size
            at that level (default the image's), µm per pixel (histology) or voxel spacing.
        corrected_by_person : bool
            Whether a person drew or corrected the annotation.
        split : {None, "train", "val", "test"}
        domain : {None, "A", "B"}
            Required for task ``stain``.
        slice_index : int, optional
            Position of a slice in its volume.
        extra : dict, optional
            JSON-serialisable extra metadata.

        Returns
        -------
        str
            The item id (the earlier item's id when the same source region is replaced).

        Raises
        ------
        DatasetError
            If anything is invalid; nothing is written then.
        """
        image = np.asarray(image)
        mask = None if mask is None else np.asarray(mask)
        self._check_arrays(image, mask, label, domain)
        region = {"level": int(level), "offset": [int(v) for v in offset],
                  "size": [int(v) for v in (size if size is not None else image.shape[:2])],
                  "mpp": None if mpp is None else float(mpp),
                  "spacing_mm": None if spacing_mm is None else [float(v) for v in spacing_mm]}
        self._check_consistent(image, region["mpp"])
        sha = source_sha256 or (self._sha(source_path) if source_path is not None else None)
        draft = Item(
            id="pending", image="", shape=tuple(int(v) for v in image.shape),
            label=None if label is None else int(label), patient_id=patient_id,
            slide_id=slide_id, source={"path": None if source_path is None else str(source_path),
                                       "sha256": sha},
            region=region, corrected_by_person=bool(corrected_by_person), created=now_iso(),
            split=split, domain=domain, slice_index=slice_index, extra=dict(extra or {}),
        )
        Item.from_json({**draft.to_json(), "image": "x"}, "new item")  # type checks
        _check_json(draft.extra)
        old = self._find_replaced(draft)
        new_id = self._choose_id(item_id, draft, old)
        return self._store(draft, new_id, image, mask, old)

    def _check_arrays(self, image: np.ndarray, mask: np.ndarray | None, label: int | None,
                      domain: str | None) -> None:
        where = "new item"
        if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
            raise DatasetError(f"{where}: image must be (h, w) or (h, w, c<=4), found "
                               f"{image.shape}")
        if image.size == 0 or image.dtype.kind not in "uif":
            raise DatasetError(f"{where}: image must be a non-empty numeric array")
        check_label(label, self.class_map, self.rule, where)
        if self.rule.domain and domain not in ("A", "B"):
            raise DatasetError(f"{where}: task 'stain' needs domain 'A' or 'B'")
        if mask is None:
            if self.rule.mask is not None:
                raise DatasetError(f"{where}: task {self.task!r} needs a mask")
            return
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"{where}: mask shape {mask.shape} differs from image shape "
                               f"{image.shape[:2]}")
        check_mask_values(mask, self.class_map, self.rule, where)

    def _check_consistent(self, image: np.ndarray, mpp: float | None) -> None:
        """Same channel count and µm/px as the items already there."""
        if not self._items:
            return
        first = self._items[0]
        if tuple(first.shape[2:]) != tuple(image.shape[2:]):
            raise DatasetError(f"new item: image has shape {image.shape}, the dataset's "
                               f"images have {list(first.shape[2:]) or 'no'} channels")
        known = next((i.region.get("mpp") for i in self._items if i.region.get("mpp")), None)
        if known and mpp and abs(mpp - known) > MPP_TOLERANCE * known:
            raise DatasetError(f"new item: {mpp} µm/px differs from the dataset's {known} "
                               "µm/px (mixed resolutions); resample it to the same µm/px")

    def _sha(self, path: str | os.PathLike[str]) -> str:
        source = Path(path)
        try:
            stat = source.stat()
        except OSError as exc:
            raise DatasetError(f"new item: source {source} not readable ({exc})") from exc
        key = (str(source.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in self._sha_cache:
            self._sha_cache[key] = sha256_file(source)
        return self._sha_cache[key]

    def _find_replaced(self, draft: Item) -> int | None:
        key = draft.dedupe_key()
        if key is None:
            return None
        return next((k for k, item in enumerate(self._items) if item.dedupe_key() == key), None)

    def _choose_id(self, item_id: str | None, draft: Item, old: int | None) -> str:
        taken = {item.id for k, item in enumerate(self._items) if k != old}
        if item_id is not None:
            if check_item_id(item_id) in taken:
                raise DatasetError(f"new item: id {item_id!r} is already used")
            return item_id
        if old is not None:
            return self._items[old].id
        stem = safe_id(draft.patient_id or draft.slide_id or "item")
        n = len(self._items)
        while f"{stem}_{n:06d}" in taken:
            n += 1
        return f"{stem}_{n:06d}"

    def _free_name(self, folder: str, item_id: str) -> str:
        rel = f"{folder}/{item_id}.tif"
        while (self.path / rel).exists():
            rel = f"{folder}/{item_id}.{secrets.token_hex(3)}.tif"
        return rel

    def _store(self, draft: Item, item_id: str, image: np.ndarray, mask: np.ndarray | None,
               old: int | None) -> str:
        image_rel = self._free_name("images", item_id)
        mask_rel = None if mask is None else self._free_name("masks", item_id)
        _write_tiff(self.path / image_rel, image)
        if mask is not None and mask_rel is not None:
            _write_tiff(self.path / mask_rel, _mask_array(mask, self.rule.mask))
        item = Item(**{**draft.__dict__, "id": item_id, "image": image_rel, "mask": mask_rel})
        if old is None:
            self._items.append(item)
        else:
            previous = self._items[old]
            self._doomed += [self.path / p for p in (previous.image, previous.mask) if p]
            self._items[old] = item
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()
        return item_id

    def flush(self) -> None:
        """Rewrite the manifest atomically, then delete files of replaced items."""
        self._write_manifest()
        self._pending = 0
        for path in self._doomed:
            path.unlink(missing_ok=True)
        self._doomed = []

    def _write_manifest(self) -> None:
        data = header_json(self.task, self.modality, self.class_map, self.created, self._items)
        with atomic_path(self.path / MANIFEST_NAME) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def dataset(self, *, check_pixels: bool = False) -> Dataset:
        """Flush and open the result as a :class:`Dataset`."""
        self.flush()
        return Dataset.open(self.path, check_pixels=check_pixels)


def _check_json(extra: dict[str, Any]) -> None:
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"new item: extra metadata is not JSON-serialisable ({exc})") from None
