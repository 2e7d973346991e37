"""The manifest of a training dataset: format constants and the item record.

The manifest (``manifest.json`` at the dataset root) is plain JSON; this module turns it into
typed records and back, and checks its structure. The tasks and what each needs of an item
are :mod:`napari_neuroseg.dataset.tasks`; pixel-level checks (files exist, shapes, class ids)
live in :mod:`napari_neuroseg.dataset.layout`. See ``docs/dataset-format.md``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .tasks import TASK_RULES

#: Value of the manifest's ``"format"`` key.
FORMAT = "napari-neuroseg-dataset"
#: The manifest version this code writes and the newest it reads.
FORMAT_VERSION = 1
#: File name of the manifest inside the dataset folder.
MANIFEST_NAME = "manifest.json"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class DatasetError(ValueError):
    """A dataset (or an item about to be added) breaks the format; the message says where."""


#: Keys of an item in the manifest, in the order they are written.
ITEM_KEYS = (
    "id", "image", "mask", "label", "patient_id", "slide_id", "source", "region",
    "corrected_by_person", "created", "split", "domain", "slice_index", "shape", "extra",
)


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string with seconds (``2025-01-31T12:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    chunk : int
        Bytes read at a time.

    Returns
    -------
    str
        64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_item_id(item_id: str) -> str:
    """``item_id`` if it is a safe file stem (letters, digits, ``._-``, no leading dot).

    Raises
    ------
    DatasetError
        Otherwise.
    """
    if not isinstance(item_id, str) or not _ID.match(item_id):
        raise DatasetError(
            f"item id {item_id!r} is not a safe file name: use letters, digits, '.', '_' and "
            "'-', starting with a letter or digit, at most 200 characters"
        )
    return item_id


def safe_id(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip("._-")
    return (cleaned or "item")[:180]


@dataclass(frozen=True)
class Item:
    """One image of a dataset (a tile, a slice) with its mask or label and provenance.

    Attributes
    ----------
    id : str
        Unique within the dataset; a safe file stem.
    image, mask : str, str or None
        Paths relative to the dataset root (``images/<id>.tif``, ``masks/<id>.tif``).
    label : int or None
        Class id of the whole image (classification tasks).
    patient_id, slide_id : str or None
        Who and which slide/series the image comes from (patient-wise splits).
    source : dict
        ``{"path": str or None, "sha256": str or None}`` of the original file.
    region : dict
        ``{"level": int, "offset": [y, x], "size": [h, w], "mpp": float or None,
        "spacing_mm": list of float or None}``.
    corrected_by_person : bool
        Whether a person drew or corrected the mask/label.
    created : str
        ISO 8601 time the item was added.
    split : {None, "train", "val", "test"}
        A fixed split, or None to let the training split decide.
    domain : {None, "A", "B"}
        Stain translation domain.
    slice_index : int or None
        Position of a slice in its volume (MRI, CT).
    shape : list of int
        Shape of the image array (``[h, w]`` or ``[h, w, c]``).
    extra : dict
        Anything else a converter or exporter records (JSON values only).
    """

    id: str
    image: str
    shape: tuple[int, ...]
    mask: str | None = None
    label: int | None = None
    patient_id: str | None = None
    slide_id: str | None = None
    source: dict[str, Any] = field(default_factory=lambda: {"path": None, "sha256": None})
    region: dict[str, Any] = field(default_factory=dict)
    corrected_by_person: bool = False
    created: str = ""
    split: str | None = None
    domain: str | None = None
    slice_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The item as the manifest stores it (keys in :data:`ITEM_KEYS` order)."""
        data = asdict(self)
        data["shape"] = list(self.shape)
        return {key: data[key] for key in ITEM_KEYS}

    def dedupe_key(self) -> str | None:
        """``"<sha256>|<level>|<offset>|<size>|<slice>"`` naming the source region, else None."""
        sha = self.source.get("sha256")
        if not sha:
            return None
        region = self.region
        return (f"{sha}|{region.get('level')}|{region.get('offset')}|{region.get('size')}|"
                f"{self.slice_index}")

    @classmethod
    def from_json(cls, data: Any, where: str) -> Item:
        """Parse one manifest entry; ``where`` names it in error messages.

        Raises
        ------
        DatasetError
            If a required key is missing or a value has the wrong type.
        """
        if not isinstance(data, dict):
            raise DatasetError(
                f"{where}: an item must be a JSON object, found {type(data).__name__}"
            )
        for key in ("id", "image", "shape"):
            if key not in data:
                raise DatasetError(f"{where}: item has no {key!r}")
        unknown = sorted(set(data) - set(ITEM_KEYS))
        if unknown:
            raise DatasetError(f"{where}: unknown item keys {unknown}")
        item_id = check_item_id(data["id"])
        _check_types(data, f"{where} (item {item_id!r})")
        values = {key: data[key] for key in ITEM_KEYS if key in data}
        values["shape"] = tuple(int(v) for v in data["shape"])
        return cls(**values)


def _check_types(data: dict[str, Any], where: str) -> None:
    """Raise :class:`DatasetError` for a wrongly typed item value."""
    expected: dict[str, tuple[type, ...]] = {
        "image": (str,), "mask": (str, type(None)), "label": (int, type(None)),
        "patient_id": (str, type(None)), "slide_id": (str, type(None)), "source": (dict,),
        "region": (dict,), "corrected_by_person": (bool,), "created": (str,),
        "split": (str, type(None)), "domain": (str, type(None)),
        "slice_index": (int, type(None)), "shape": (list,), "extra": (dict,),
    }
    for key, types in expected.items():
        if (key in data and not isinstance(data[key], types)) or (
            key == "label" and isinstance(data.get(key), bool)
        ):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise DatasetError(f"{where}: {key!r} must be {names}, found {data[key]!r}")
    if data.get("split") not in (None, "train", "val", "test"):
        raise DatasetError(f"{where}: split must be null, 'train', 'val' or 'test'")
    if data.get("domain") not in (None, "A", "B"):
        raise DatasetError(f"{where}: domain must be null, 'A' or 'B'")
    shape = data["shape"]
    if len(shape) not in (2, 3) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise DatasetError(f"{where}: shape must be [h, w] or [h, w, c], found {shape}")


def parse_class_map(class_map: Any, where: str) -> dict[int, str]:
    """``{int id: name}`` from a JSON class map (string keys) or a Python mapping.

    Raises
    ------
    DatasetError
        If it is empty, a key is not a non-negative integer, a name is not a non-empty
        string, or two ids share a name.
    """
    if not isinstance(class_map, dict) or not class_map:
        raise DatasetError(f"{where}: class_map must be a non-empty object {{id: name}}")
    out: dict[int, str] = {}
    for key, name in class_map.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: class id {key!r} is not an integer") from None
        if class_id < 0 or not isinstance(name, str) or not name:
            raise DatasetError(f"{where}: class {key!r}: {name!r} needs an id >= 0 and a name")
        out[class_id] = name
    if len(set(out.values())) != len(out):
        raise DatasetError(f"{where}: class names must be unique, found {list(out.values())}")
    return dict(sorted(out.items()))


def check_header(data: Any, where: str) -> tuple[str, str, dict[int, str]]:
    """Check the manifest's top level; return ``(task, modality, class_map)``.

    Raises
    ------
    DatasetError
        If it is not this format, has a newer version, an unknown task, or no items list.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{where}: not a napari-neuroseg dataset manifest (no 'format': "
                           f"{FORMAT!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise DatasetError(f"{where}: format_version must be a positive integer, found {version!r}")
    if version > FORMAT_VERSION:
        raise DatasetError(
            f"{where}: format_version {version} is newer than this napari-neuroseg reads "
            f"({FORMAT_VERSION}); update napari-neuroseg"
        )
    task = data.get("task")
    if task not in TASK_RULES:
        raise DatasetError(f"{where}: unknown task {task!r}; known: {sorted(TASK_RULES)}")
    modality = data.get("modality")
    if not isinstance(modality, str) or not modality:
        raise DatasetError(f"{where}: modality must be a non-empty string")
    if not isinstance(data.get("items"), list):
        raise DatasetError(f"{where}: 'items' must be a list")
    return task, modality, parse_class_map(data.get("class_map"), where)


def header_json(task: str, modality: str, class_map: dict[int, str], created: str,
                items: list[Item]) -> dict[str, Any]:
    """The whole manifest as JSON-ready data."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "modality": modality,
        "class_map": {str(k): v for k, v in sorted(class_map.items())},
        "created": created,
        "items": [item.to_json() for item in items],
    }
