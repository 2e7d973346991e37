"""Open and validate a dataset folder: ``manifest.json`` + ``images/`` + ``masks/``.

:meth:`Dataset.open` checks everything a training run would trip over later (format and
version, files present, mask shape equal to image shape, class ids inside the class map,
unique ids, labels, task rules) and raises :class:`DatasetError` naming the item and the file,
so a bad dataset fails before the first epoch rather than in the middle of one.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .manifest import MANIFEST_NAME, DatasetError, Item, check_header
from .tasks import TASK_RULES, TaskRule

_TIFF_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, RuntimeError, struct.error)


def tiff_shape(path: Path) -> tuple[int, ...]:
    """Shape of a TIFF's first series from its header only.

    Raises
    ------
    DatasetError
        If the file is missing or is not a readable TIFF.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: file missing")
    try:
        with tifffile.TiffFile(path) as tif:
            return tuple(int(v) for v in tif.series[0].shape)
    except _TIFF_ERRORS as exc:
        raise DatasetError(f"{path}: not a readable TIFF ({exc})") from exc


def read_tiff(path: Path) -> np.ndarray:
    """Decode a TIFF; :class:`DatasetError` naming the file if that fails."""
    try:
        return tifffile.imread(path)
    except _TIFF_ERRORS as exc:
        raise DatasetError(f"{path}: cannot decode TIFF ({exc})") from exc


def check_label(label: int | None, class_map: dict[int, str], rule: TaskRule, where: str) -> None:
    """Raise :class:`DatasetError` if ``label`` is missing where required or not in the map."""
    if label is None:
        if rule.label:
            raise DatasetError(f"{where}: this task needs a label (one of {class_map})")
        return
    if label not in class_map:
        raise DatasetError(f"{where}: label {label} is not in the class map {class_map}")


def check_mask_values(mask: np.ndarray, class_map: dict[int, str], rule: TaskRule,
                      where: str) -> None:
    """Check a mask's dtype and values against the task and class map.

    Raises
    ------
    DatasetError
        If it is not an integer array, holds negative values, holds class ids outside the
        class map (semantic masks), or is all background where the task forbids that.
    """
    if mask.dtype.kind not in "ui" and mask.dtype != bool:
        raise DatasetError(f"{where}: mask must hold integer ids, found dtype {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise DatasetError(f"{where}: mask holds negative ids")
    values = np.unique(mask)
    if rule.mask == "semantic":
        unknown = [int(v) for v in values if int(v) not in class_map]
        if unknown:
            raise DatasetError(
                f"{where}: mask holds class ids {unknown[:10]} that are not in the class map "
                f"{class_map}"
            )
    if not rule.empty_mask_ok and not np.any(values != 0):
        raise DatasetError(f"{where}: mask is all background (0), which this task does not "
                           "accept (nothing was annotated)")


class Dataset:
    """A validated dataset folder. Open with :meth:`Dataset.open`.

    Attributes
    ----------
    path : pathlib.Path
        The dataset folder.
    task, modality : str
        From the manifest.
    class_map : dict of int to str
        Class id to name.
    created : str
        When the dataset was first written (ISO 8601).
    items : tuple of Item
        In manifest order.
    """

    def __init__(self, path: Path, task: str, modality: str, class_map: dict[int, str],
                 created: str, items: tuple[Item, ...]) -> None:
        self.path = path
        self.task = task
        self.modality = modality
        self.class_map = class_map
        self.created = created
        self.items = items
        self._by_id = {item.id: item for item in items}

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, check_pixels: bool = True) -> Dataset:
        """Read and validate a dataset.

        Parameters
        ----------
        path : str or os.PathLike
            The dataset folder (or its ``manifest.json``).
        check_pixels : bool
            Also decode every mask to check its class ids (and emptiness). Headers (shapes)
            are always checked.

        Returns
        -------
        Dataset

        Raises
        ------
        DatasetError
            On the first problem, naming the item and the file.
        """
        root = Path(path)
        if root.name == MANIFEST_NAME and root.is_file():
            root = root.parent
        data = _load_manifest(root / MANIFEST_NAME)
        where = str(root / MANIFEST_NAME)
        task, modality, class_map = check_header(data, where)
        items = tuple(
            Item.from_json(entry, f"{where}: items[{k}]") for k, entry in enumerate(data["items"])
        )
        dataset = cls(root, task, modality, class_map, str(data.get("created", "")), items)
        dataset._validate(check_pixels)
        return dataset

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def rule(self) -> TaskRule:
        """The :class:`TaskRule` of this dataset's task."""
        return TASK_RULES[self.task]

    def item(self, item_id: str) -> Item:
        """The item with this id (KeyError if there is none)."""
        return self._by_id[item_id]

    def _resolve(self, item: Item | str) -> Item:
        return self._by_id[item] if isinstance(item, str) else item

    def read_image(self, item: Item | str) -> np.ndarray:
        """The image array of an item (``(h, w)`` or ``(h, w, c)``, stored dtype)."""
        return read_tiff(self.path / self._resolve(item).image)

    def read_mask(self, item: Item | str) -> np.ndarray | None:
        """The mask of an item (class ids or instance ids), or None if it has none."""
        resolved = self._resolve(item)
        return None if resolved.mask is None else read_tiff(self.path / resolved.mask)

    def class_pixel_counts(self, items: list[Item] | None = None) -> dict[str, dict[int, int]]:
        """Pixels per class of each item's mask (computed on demand, masks decoded).

        For instance masks (task ``nuclei``) every id > 0 counts as class 1. Items without a
        mask get ``{}``.

        Parameters
        ----------
        items : list of Item, optional
            Default all items.

        Returns
        -------
        dict of str to dict of int to int
            Item id to ``{class id: pixel count}`` for every class of the class map.
        """
        out: dict[str, dict[int, int]] = {}
        for item in self.items if items is None else items:
            mask = self.read_mask(item)
            if mask is None:
                out[item.id] = {}
                continue
            if self.rule.mask == "instance":
                mask = (mask > 0).astype(np.uint8)
            counts = np.bincount(mask.ravel().astype(np.int64), minlength=max(self.class_map) + 1)
            out[item.id] = {k: int(counts[k]) for k in self.class_map}
        return out

    def patients(self) -> dict[str, list[str]]:
        """Patient id to the ids of its items (items without a patient under ``""``)."""
        out: dict[str, list[str]] = {}
        for item in self.items:
            out.setdefault(item.patient_id or "", []).append(item.id)
        return out

    def subset(self, patients: Iterable[str]) -> Dataset:
        """The same dataset restricted to the items of ``patients`` (manifest order kept).

        Raises
        ------
        DatasetError
            If a patient has no item here (a typo would otherwise score nothing).
        """
        wanted = list(dict.fromkeys(patients))
        known = self.patients()
        missing = [p for p in wanted if p not in known]
        if missing:
            raise DatasetError(f"{self.path}: no items of patient(s) {', '.join(missing)} "
                               f"(patients here: {', '.join(sorted(known))})")
        items = tuple(item for item in self.items if (item.patient_id or "") in wanted)
        return Dataset(self.path, self.task, self.modality, dict(self.class_map), self.created,
                       items)

    def orphan_files(self) -> list[Path]:
        """Files under ``images/`` and ``masks/`` that no item refers to (left by a crash)."""
        used = {self.path / p for item in self.items for p in (item.image, item.mask) if p}
        found = [p for sub in ("images", "masks") if (self.path / sub).is_dir()
                 for p in sorted((self.path / sub).iterdir())]
        return [p for p in found if p not in used]

    def _validate(self, check_pixels: bool) -> None:
        """Check ids, task rules, files, shapes and (optionally) mask values."""
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise DatasetError(
                    f"{self.path / MANIFEST_NAME}: item id {item.id!r} is used twice"
                )
            seen.add(item.id)
            self._validate_item(item, check_pixels)

    def _validate_item(self, item: Item, check_pixels: bool) -> None:
        rule = self.rule
        where = f"item {item.id!r}"
        check_label(item.label, self.class_map, rule, where)
        if rule.domain and item.domain is None:
            raise DatasetError(f"{where}: task 'stain' needs a domain ('A' or 'B')")
        for rel in (item.image, item.mask):
            if rel is not None and (Path(rel).is_absolute() or ".." in Path(rel).parts):
                raise DatasetError(f"{where}: path {rel!r} must be relative, inside the dataset")
        shape = tiff_shape(self.path / item.image)
        if shape != item.shape:
            raise DatasetError(f"{where}: {self.path / item.image} has shape {shape}, the "
                               f"manifest says {item.shape}")
        if item.mask is None:
            if rule.mask is not None:
                raise DatasetError(f"{where}: task {self.task!r} needs a mask")
            return
        mask_path = self.path / item.mask
        mask_shape = tiff_shape(mask_path)
        if mask_shape != shape[:2]:
            raise DatasetError(f"{where}: mask {mask_path} is {mask_shape}, its image "
                               f"{item.image} is {shape[:2]}")
        if check_pixels:
            check_mask_values(read_tiff(mask_path), self.class_map, rule,
                              f"{where} ({mask_path})")


def _load_manifest(path: Path) -> Any:
    """The parsed JSON of a manifest; :class:`DatasetError` if missing or malformed."""
    if not path.is_file():
        raise DatasetError(f"{path}: no dataset manifest here (expected {MANIFEST_NAME})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc})") from exc
