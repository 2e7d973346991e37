"""The LeNet nuclei-tile recipe's own input layout: a folder of tiles with a ``labels.csv``.

The recipe (docs/training-recipes.md) ships its data as ``dataset_nuclei_tiles/labels.csv``
next to ``tile_*.png``, some tiles labelled NUCLEI / NO_NUCLEUS and the others not. A folder
holding ``labels.csv`` and no ``manifest.json`` is accepted as ``--data`` besides the export
layout: its labelled rows become the items of an in-memory ``nuclei-tiles``
:class:`~napari_neuroseg.dataset.Dataset` (nothing is copied), and its unlabelled tiles (rows
with an empty label, and image files in the tiles' folders that no row names) the
unlabelled pool.

``labels.csv`` has a header. The file column is the first whose name contains ``file``,
``image``, ``tile``, ``path``, ``name`` or ``id``; the label column the first whose name
contains ``label``, ``class``, ``target`` or ``nucle``; with two columns and neither name, the
first and the second. Optional ``slide_id``/``slide``, ``patient_id``/``patient`` and
``split`` columns keep tiles of one slide on one side of the split (without them the split is
tile-wise). File names are relative to the CSV's folder, with or without their suffix.
Labels: ``NUCLEI``, ``1``, ``true``, ``yes`` (1); ``NO_NUCLEUS``, ``NO_NUCLEI``, ``0``,
``false``, ``no`` (0); empty, ``-1``, ``nan``, ``none``, ``?``, ``unlabeled``: unlabelled.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.dataset.manifest import Item
from napari_neuroseg.dataset.tasks import TILE_CLASSES
from training.tasks._common import DataError, open_task_dataset
from training.tasks.nuclei_tiles.data import IMAGE_SUFFIXES, TileSource, files_pool

__all__ = ["LABELS_CSV", "LabelsCsvDataset", "is_labels_folder", "open_tile_data",
           "read_labels_csv"]

LABELS_CSV = "labels.csv"
_FILE_WORDS = ("file", "image", "tile", "path", "name", "id")
_LABEL_WORDS = ("label", "class", "target", "nucle")
_POSITIVE = {"nuclei", "nucleus", "1", "1.0", "true", "yes", "positive"}
_NEGATIVE = {"no_nucleus", "no_nuclei", "no nucleus", "no nuclei", "no-nucleus", "0", "0.0",
             "false", "no", "negative"}
_UNLABELLED = {"", "-1", "nan", "none", "null", "?", "unlabeled", "unlabelled", "unknown"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_labels_folder(path: str | Path | None) -> bool:
    """A folder with ``labels.csv`` and no ``manifest.json``."""
    if not path:
        return False
    root = Path(path)
    return (root / LABELS_CSV).is_file() and not (root / "manifest.json").is_file()


class LabelsCsvDataset(Dataset):
    """A ``nuclei-tiles`` dataset read in place from ``labels.csv`` and its tiles.

    Items' ``image`` is the tile's path relative to the folder; :meth:`read_image` decodes it
    as RGB uint8 with Pillow. ``unlabelled`` lists the tiles without a label (relative
    paths).
    """

    def __init__(self, path: Path, items: tuple[Item, ...], unlabelled: tuple[str, ...]
                 ) -> None:
        super().__init__(path, "nuclei-tiles", "HE", dict(TILE_CLASSES), "", items)
        self.unlabelled = unlabelled

    def read_image(self, item: Item | str) -> np.ndarray:
        """The tile as ``(h, w, 3)`` uint8."""
        name = self._resolve(item).image
        try:
            with Image.open(self.path / name) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as err:
            raise DataError(f"{self.path / name}: not a readable image ({err})") from err

    def read_mask(self, item: Item | str) -> None:
        """Tiles of this layout have no mask."""
        return None


def _column(header: list[str], words: tuple[str, ...], skip: int | None = None) -> int | None:
    for k, name in enumerate(header):
        if k != skip and any(word in name.strip().lower() for word in words):
            return k
    return None


def _optional(header: list[str], *names: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def _label(value: str, where: str) -> int | None:
    text = value.strip().lower()
    if text in _UNLABELLED:
        return None
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    raise DataError(f"{where}: label {value!r} is neither NUCLEI/1 nor NO_NUCLEUS/0 (leave it "
                    "empty for an unlabelled tile)")


def _resolve(root: Path, name: str) -> Path | None:
    path = root / name.strip()
    if path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_labels_csv(csv_path: str | Path) -> list[dict[str, str | int | None]]:
    """The rows of a ``labels.csv``: ``file`` (a path relative to its folder), ``label``
    (0, 1 or None), ``slide_id``, ``patient_id``, ``split`` (str or None).

    Raises
    ------
    DataError
        No header, no file or label column, an unknown label, a file that does not exist, a
        file named twice; the message names the CSV and the row.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{csv_path}: empty file")
    header = rows[0]
    if header and Path(header[0].strip()).suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"{csv_path}: the first row names a tile; add a header such as "
                        "'filename,label'")
    file_col = _column(header, _FILE_WORDS)
    label_col = _column(header, _LABEL_WORDS, skip=file_col)
    if (file_col is None or label_col is None) and len(header) == 2:
        file_col, label_col = 0, 1
    if file_col is None or label_col is None:
        raise DataError(f"{csv_path}: header {header} has no file column (a name with "
                        f"{'/'.join(_FILE_WORDS)}) or no label column (a name with "
                        f"{'/'.join(_LABEL_WORDS)})")
    slide_col = _optional(header, "slide_id", "slide")
    patient_col = _optional(header, "patient_id", "patient")
    split_col = _optional(header, "split")
    out, missing, seen = [], [], set()
    for n, row in enumerate(rows[1:], start=2):
        where = f"{csv_path}, row {n}"
        cells = row + [""] * (len(header) - len(row))
        path = _resolve(root, cells[file_col])
        if path is None:
            missing.append(cells[file_col].strip())
            continue
        relative = path.relative_to(root).as_posix()
        if relative in seen:
            raise DataError(f"{where}: {relative} is listed twice")
        seen.add(relative)
        split = cells[split_col].strip().lower() or None if split_col is not None else None
        if split not in (None, "train", "val", "test"):
            raise DataError(f"{where}: split must be empty, train, val or test, not {split!r}")
        out.append({"file": relative, "label": _label(cells[label_col], where),
                    "slide_id": (cells[slide_col].strip() or None) if slide_col is not None
                    else None,
                    "patient_id": (cells[patient_col].strip() or None)
                    if patient_col is not None else None, "split": split})
    if missing:
        raise DataError(f"{csv_path}: {len(missing)} listed tile(s) not found next to it, e.g. "
                        f"{', '.join(missing[:5])}")
    return out


def _item_id(relative: str, used: set[str]) -> str:
    base = _SAFE.sub("_", Path(relative).with_suffix("").as_posix()).strip("._-") or "tile"
    item_id, k = base, 1
    while item_id in used:
        k += 1
        item_id = f"{base}_{k}"
    used.add(item_id)
    return item_id


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from err


def open_labels_folder(path: str | Path) -> LabelsCsvDataset:
    """The tiles of ``path/labels.csv`` as a :class:`LabelsCsvDataset`.

    Raises
    ------
    DataError
        See :func:`read_labels_csv`; also no labelled row.
    """
    root = Path(path)
    rows = read_labels_csv(root / LABELS_CSV)
    used: set[str] = set()
    items = tuple(
        Item(id=_item_id(str(row["file"]), used), image=str(row["file"]),
             shape=(*_size(root / str(row["file"])), 3), label=row["label"],
             patient_id=row["patient_id"], slide_id=row["slide_id"], split=row["split"],
             source={"path": str(root / str(row["file"])), "sha256": None})
        for row in rows if row["label"] is not None)
    if not items:
        raise DataError(f"{root / LABELS_CSV}: no row has a label (NUCLEI or NO_NUCLEUS)")
    listed = {str(row["file"]) for row in rows}
    unlabelled = [str(row["file"]) for row in rows if row["label"] is None]
    folders = {(root / str(row["file"])).parent for row in rows}
    for folder in sorted(folders):
        unlabelled += sorted(p.relative_to(root).as_posix() for p in folder.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                             and p.relative_to(root).as_posix() not in listed)
    return LabelsCsvDataset(root, items, tuple(unlabelled))


def open_tile_data(path: str | None, task: str) -> Dataset:
    """``--data``: a ``labels.csv`` folder (:func:`open_labels_folder`) or a dataset in the
    export layout of ``task`` (:func:`training.tasks._common.open_task_dataset`)."""
    if is_labels_folder(path):
        return open_labels_folder(str(path))
    return open_task_dataset(path, task)


def csv_unlabelled_pool(data: Dataset, tile_size: int) -> TileSource | None:
    """The unlabelled tiles of a :class:`LabelsCsvDataset` (None for other datasets or when
    it has none)."""
    if not isinstance(data, LabelsCsvDataset) or not data.unlabelled:
        return None
    return files_pool(data.path, list(data.unlabelled), tile_size,
                      f"{data.path / LABELS_CSV} (unlabelled tiles)")
