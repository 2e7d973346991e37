"""Convert a CSV of CT patient labels beside DICOM folders to a dataset (task ``ct``).

The layout of the CT metastasis recipe (docs/training-recipes.md): ``CTs/<patient>/*.dcm`` and
``labels1.csv`` with one row per patient. Column names vary, so the patient column is the first
whose name is one of :data:`PATIENT_COLUMNS` (else the first column) and the label column the first
in :data:`LABEL_COLUMNS` (else the second). Labels may be ``0/1``, ``yes/no``, ``true/false``,
``positive/negative``. Folder names match patient ids exactly, ignoring case, or by the number they
contain (``patient_007`` matches ``7``).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..io import ReaderError
from ..io.dicom import read_dicom
from .layout import Dataset
from .manifest import DatasetError
from .tasks import CT_CLASSES
from .writer import DatasetWriter

PATIENT_COLUMNS = ("patient_id", "patient", "patientid", "id", "subject", "case", "name")
LABEL_COLUMNS = ("label", "labels", "metastasis", "target", "class", "y", "diagnosis")
_TRUE = {"1", "yes", "y", "true", "positive", "pos", "metastasis", "met"}
_FALSE = {"0", "no", "n", "false", "negative", "neg", "normal", "none"}


def _column(header: list[str], wanted: tuple[str, ...], fallback: int, path: Path) -> int:
    names = [h.strip().lower().replace(" ", "_") for h in header]
    for name in wanted:
        if name in names:
            return names.index(name)
    if fallback >= len(header):
        raise DatasetError(f"{path}: needs a patient and a label column, found {header}")
    return fallback


def _parse_label(text: str, where: str) -> int:
    value = text.strip().lower()
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number in (0.0, 1.0):
        return int(number)
    raise DatasetError(f"{where}: label {text!r} is not 0/1, yes/no, true/false or "
                       "positive/negative")


def read_patient_labels(csv_path: str | os.PathLike[str]) -> dict[str, int]:
    """Patient id to label (0/1) from a labels CSV (see the module docstring).

    Raises
    ------
    DatasetError
        If the file is unreadable or empty, a label is not binary, or a patient repeats with
        different labels.
    """
    path = Path(csv_path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable CSV ({exc})") from exc
    if len(rows) < 2:
        raise DatasetError(f"{path}: needs a header row and at least one patient row")
    pid_col = _column(rows[0], PATIENT_COLUMNS, 0, path)
    label_col = _column(rows[0], LABEL_COLUMNS, 1 if pid_col != 1 else 0, path)
    labels: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if max(pid_col, label_col) >= len(row):
            raise DatasetError(f"{path}:{line}: too few columns ({row})")
        pid = row[pid_col].strip()
        label = _parse_label(row[label_col], f"{path}:{line}")
        if labels.get(pid, label) != label:
            raise DatasetError(f"{path}:{line}: patient {pid} has labels 0 and 1")
        labels[pid] = label
    return labels


def _number(text: str) -> int | None:
    digits = re.findall(r"\d+", text)
    return int(digits[-1]) if digits else None


def match_folders(patients: list[str], folders: list[Path]) -> dict[str, Path]:
    """Patient id to its folder: exact name, then case-insensitive, then the same number."""
    out: dict[str, Path] = {}
    by_name = {f.name: f for f in folders}
    by_lower = {f.name.lower(): f for f in folders}
    by_number: dict[int, list[Path]] = {}
    for f in folders:
        if (n := _number(f.name)) is not None:
            by_number.setdefault(n, []).append(f)
    for pid in patients:
        n = _number(pid)
        candidates = by_number.get(n, []) if n is not None else []
        found = by_name.get(pid) or by_lower.get(pid.lower()) or (
            candidates[0] if len(candidates) == 1 else None)
        if found is not None:
            out[pid] = found
    return out


def convert_ct_labels(csv_path: str | os.PathLike[str], dicom_root: str | os.PathLike[str],
                      dst: str | os.PathLike[str], *, skip_missing: bool = False) -> Dataset:
    """Convert patient-labelled CT series into a slice dataset.

    Parameters
    ----------
    csv_path : str or os.PathLike
        One row per patient: a patient id and a binary label (metastasis or not).
    dicom_root : str or os.PathLike
        One sub-folder of DICOM files per patient (searched recursively; the series with the
        most slices is used when a folder holds several).
    dst : str or os.PathLike
        The dataset folder to create or extend.
    skip_missing : bool
        Skip (with a warning) CSV patients without a folder instead of raising.

    Returns
    -------
    Dataset
        Task ``"ct"``, modality ``"CT"``: one item per slice in position order, the image in
        HU (int16 when the values are whole numbers in range, else float32), ``label`` the
        patient's label (slice labels are unknown), ``slice_index``, ``spacing_mm``
        ``[dz, dy, dx]``, the slice's own file as source.

    Raises
    ------
    DatasetError
        If the CSV is bad, a patient has no folder (unless ``skip_missing``) or a series
        cannot be read.
    """
    labels = read_patient_labels(csv_path)
    root = Path(dicom_root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    matched = match_folders(list(labels), folders)
    missing = [pid for pid in labels if pid not in matched]
    if missing and not skip_missing:
        raise DatasetError(f"{len(missing)} patient(s) of {csv_path} have no folder in {root}, "
                           f"e.g. {missing[0]}")
    if missing:
        warnings.warn(f"skipping {len(missing)} patient(s) without a folder: {missing[:5]}",
                      stacklevel=2)
    with DatasetWriter(dst, "ct", "CT", CT_CLASSES, flush_every=256) as writer:
        for pid, folder in matched.items():
            _add_patient(writer, pid, labels[pid], folder)
    return Dataset.open(dst)


def _hu_array(plane: np.ndarray) -> np.ndarray:
    info = np.iinfo(np.int16)
    if np.all(np.mod(plane, 1) == 0) and plane.min() >= info.min and plane.max() <= info.max:
        return plane.astype(np.int16)
    return plane.astype(np.float32)


def _add_patient(writer: DatasetWriter, pid: str, label: int, folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            series = read_dicom(folder)
        except ReaderError as exc:
            raise DatasetError(f"patient {pid}: {exc}") from exc
    image = max(series, key=lambda s: s.levels[0].shape[0])
    volume = np.asarray(image.levels[0])
    files = image.metadata.get("files") or []
    if len(files) != volume.shape[0]:  # multi-frame or skipped files: no per-slice source
        files = [None] * volume.shape[0]
    spacing = [float(v) for v in image.scale]
    for k in range(volume.shape[0]):
        writer.add(_hu_array(volume[k]), label=label, patient_id=pid,
                   slide_id=image.metadata.get("series_uid"), source_path=files[k],
                   spacing_mm=spacing, slice_index=k,
                   extra={"series_number": image.metadata.get("series_number")})
