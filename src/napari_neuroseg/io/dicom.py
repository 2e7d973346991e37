"""Read CT and MR DICOM series (a folder, a DICOMDIR or a list of files) as lazy volumes.

Opening reads headers only (except a few slices of a non-CT series whose headers give no
usable display window: see ``_dicom_volume.display_window``); every slice is decoded when
napari (or anyone) first asks for it. Slices are ordered by their position along the slice
normal, never by file name or InstanceNumber. Gantry tilt and uneven spacing are reported and
can be corrected by resampling. See ``docs/readers-dicom.md``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from pydicom.fileset import FileSet

from napari_neuroseg.io._dicom_headers import (
    HEADER_ERRORS,
    HeaderScan,
    RejectedFile,
    has_dicm_marker,
    scan_headers,
    walk_files,
)
from napari_neuroseg.io._dicom_series import DicomSeries, group_series, select_series
from napari_neuroseg.io._dicom_volume import DicomWarning, series_to_image
from napari_neuroseg.io._types import LazyImage, ReaderError

__all__ = [
    "DicomSeries",
    "DicomWarning",
    "is_dicom_file",
    "is_dicom_folder",
    "read_dicom",
    "scan_dicom",
]

PathLike = str | os.PathLike
Source = PathLike | Sequence[PathLike]
PEEK_FILES = 8
PEEK_DIRS = 4


def is_dicom_file(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM file: ``DICM`` at byte 128, or a file named DICOMDIR.

    Cheap (reads 4 bytes) and never raises.

    Parameters
    ----------
    path : str or path-like
        Any path.

    Returns
    -------
    bool
    """
    try:
        file = Path(path)
        if file.name.upper() == "DICOMDIR" and file.is_file():
            return True
    except (OSError, TypeError, ValueError):
        return False
    return has_dicm_marker(file)


def _peek_folder(folder: Path, depth: int) -> bool:
    files: list[str] = []
    dirs: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file() and len(files) < PEEK_FILES:
                files.append(entry.path)
            elif entry.is_dir() and len(dirs) < PEEK_DIRS:
                dirs.append(entry.path)
            if len(files) >= PEEK_FILES and len(dirs) >= PEEK_DIRS:
                break
    if any(is_dicom_file(f) for f in files):
        return True
    return depth > 0 and any(_peek_folder(Path(d), depth - 1) for d in dirs)


def is_dicom_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding DICOM files (or a DICOMDIR).

    Looks at no more than a handful of files in the folder and in a few of its sub-folders,
    so it is cheap; never raises.

    Parameters
    ----------
    path : str or path-like
        Any path.

    Returns
    -------
    bool
    """
    try:
        folder = Path(path)
        if not folder.is_dir():
            return False
        if any((folder / name).is_file() for name in ("DICOMDIR", "dicomdir")):
            return True
        return _peek_folder(folder, depth=1)
    except (OSError, TypeError, ValueError):
        return False


def _dicomdir_files(path: Path) -> tuple[list[Path], list[RejectedFile]]:
    """The files a DICOMDIR refers to (and those it lists but that are missing)."""
    try:
        fileset = FileSet(path)
    except HEADER_ERRORS as exc:
        raise ReaderError(path, f"cannot read this DICOMDIR ({type(exc).__name__}: {exc})") from exc
    files, missing = [], []
    for instance in fileset:
        file = Path(instance.path)
        if file.is_file():
            files.append(file)
        else:
            missing.append(RejectedFile(file, "corrupt", "listed in the DICOMDIR but missing"))
    return files, missing


def _expand(item: PathLike) -> tuple[list[Path], list[RejectedFile]]:
    path = Path(item)
    if path.is_dir():
        return [f for f in walk_files(path) if has_dicm_marker(f)], []
    if not path.exists():
        raise ReaderError(path, "does not exist")
    if path.name.upper() == "DICOMDIR":
        return _dicomdir_files(path)
    return [path], []


def _source_label(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    paths = [Path(p) for p in source]
    if not paths:
        raise ReaderError("(no files)", "an empty list of files was given")
    common = os.path.commonpath([str(p.resolve().parent) for p in paths])
    return paths[0].as_posix() if len(paths) == 1 else f"{common} ({len(paths)} files)"


def _scan_source(source: Source) -> tuple[HeaderScan, str, bool]:
    """Read the headers of everything in ``source``; ``True`` when it is a single file."""
    label = _source_label(source)
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[Path] = []
    missing: list[RejectedFile] = []
    for item in items:
        found, lost = _expand(item)
        files.extend(found)
        missing.extend(lost)
    scan = scan_headers(files)
    scan.rejected.extend(missing)
    single = len(items) == 1 and Path(items[0]).is_file() and len(files) == 1
    return scan, label, single


def _no_images(scan: HeaderScan, label: str, single: bool, problems: list[str]) -> ReaderError:
    if single and scan.rejected:
        reject = scan.rejected[0]
        return ReaderError(reject.path, reject.reason)
    parts = [f"no readable DICOM images (looked at {scan.n_files} DICOM file(s)"]
    for kind, text in (("not_image", "without pixel data"), ("corrupt", "damaged"),
                       ("unsupported", "not supported")):
        rejects = scan.of_kind(kind)
        if rejects:
            names = ", ".join(f"{r.path.name} ({r.reason})" for r in rejects[:3])
            parts.append(f"{len(rejects)} {text}: {names}" + (" ..." if len(rejects) > 3 else ""))
    return ReaderError(label, "; ".join(parts) + ")" + "".join(f"; {p}" for p in problems))


def _scan(source: Source) -> tuple[list[DicomSeries], str]:
    scan, label, single = _scan_source(source)
    found, problems = group_series(scan, label)
    if not found:
        raise _no_images(scan, label, single, problems)
    for series in found:
        series.notes.extend(problems)
    return found, label


def scan_dicom(source: Source) -> list[DicomSeries]:
    """List the image series in a folder, DICOMDIR, file or list of files (headers only).

    Files without pixel data (DICOMDIR, structured reports, presentation states) are
    ignored; damaged files are left out and listed in the ``warnings`` of their series.
    No :mod:`warnings` are emitted: the caller shows ``series.warnings``.

    Parameters
    ----------
    source : path-like or sequence of path-like
        A folder (searched recursively), a DICOMDIR, one file, or a list of files/folders.

    Returns
    -------
    list of DicomSeries
        Sorted by SeriesNumber, then description.

    Raises
    ------
    ReaderError
        If nothing readable is found, or a series mixes matrix sizes.
    """
    return _scan(source)[0]


def read_dicom(
    source: Source,
    *,
    series: str | int | None = None,
    resample: bool = False,
    spacing: float | None = None,
) -> list[LazyImage]:
    """Read DICOM series as lazy ``(z, y, x)`` volumes in mm (CT in HU).

    Parameters
    ----------
    source : path-like or sequence of path-like
        A folder (searched recursively), a DICOMDIR, one file, or a list of files/folders.
    series : str or int, optional
        Read one series: a SeriesInstanceUID (str), or a SeriesNumber (int; an int that is no
        SeriesNumber is taken as an index into :func:`scan_dicom`'s list). Default: all.
    resample : bool
        Resample to a uniform grid along the slice normal, correcting gantry tilt.
    spacing : float, optional
        Slice gap in mm of the resampled grid (needs ``resample=True``); default the median
        slice gap.

    Returns
    -------
    list of LazyImage
        One per series, each a single dask array with one chunk per slice.

    Raises
    ------
    ReaderError
        If nothing readable is found, ``series`` matches nothing, a series mixes matrix
        sizes, or a single file given holds no usable image.

    Warns
    -----
    DicomWarning
        For every entry of each image's ``warnings`` (tilt, uneven spacing, skipped files).
    """
    if spacing is not None and not resample:
        raise ValueError("spacing is only used with resample=True")
    found, label = _scan(source)
    chosen = found if series is None else [select_series(found, series, label)]
    images = [series_to_image(s, resample=resample, spacing=spacing) for s in chosen]
    for image in images:
        for message in image.warnings:
            warnings.warn(message, DicomWarning, stacklevel=2)
    return images
