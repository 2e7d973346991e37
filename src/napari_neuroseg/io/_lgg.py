"""The Kaggle "lgg-mri-segmentation" layout: one TIFF per slice, one mask per slice.

A patient folder holds ``<id>_<n>.tif`` slices (256x256x3 uint8: pre-contrast, FLAIR,
post-contrast) and, for the training set, ``<id>_<n>_mask.tif`` masks (0 background, 255
FLAIR abnormality). A patient to segment has no masks: then the file names must follow the
Kaggle pattern ``TCGA_<site>_<id>_<yyyymmdd>_<n>.tif`` (any ``<x>_<n>.tif`` is too common a
name to claim without a mask beside it). Slices are ordered by the integer ``n`` (a string
sort would put ``_10`` before ``_2``).
The layout stores no voxel size, so the scale is 1.0 mm with a ``"voxel size unknown"``
warning.
"""

from __future__ import annotations

import os
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import tifffile

from ._types import LazyImage, ReaderError

#: Names of the three channels of a Kaggle LGG slice, in file order.
CHANNEL_NAMES = ("pre-contrast", "FLAIR", "post-contrast")
_NAME = re.compile(r"^(?P<pid>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
#: A Kaggle patient id: ``TCGA_<site>_<participant>_<scan date>``.
_KAGGLE_ID = re.compile(r"^TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}_\d{8}$", re.IGNORECASE)
_TIFF_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, RuntimeError, struct.error)


@dataclass(frozen=True)
class LggSlice:
    """One slice of a patient: its number, image file and mask file (None if missing)."""

    patient_id: str
    number: int
    image: Path
    mask: Path | None


def _parse(name: str) -> tuple[str, int, bool] | None:
    """``(patient_id, n, is_mask)`` for an LGG file name, else None."""
    match = _NAME.match(name)
    if match is None:
        return None
    return match["pid"], int(match["n"]), match["mask"] is not None


def _group(folder: Path, names: list[str]) -> dict[str, list[LggSlice]]:
    """Slices per patient id, each list sorted by slice number."""
    images: dict[tuple[str, int], Path] = {}
    masks: dict[tuple[str, int], Path] = {}
    for name in names:
        parsed = _parse(name)
        if parsed is not None:
            pid, n, is_mask = parsed
            (masks if is_mask else images)[(pid, n)] = folder / name
    patients: dict[str, list[LggSlice]] = defaultdict(list)
    for (pid, n), image in images.items():
        patients[pid].append(LggSlice(pid, n, image, masks.get((pid, n))))
    return {pid: sorted(s, key=lambda s: s.number) for pid, s in sorted(patients.items())}


def find_lgg_slices(path: str | os.PathLike[str]) -> dict[str, list[LggSlice]]:
    """The LGG slices in a folder, or the one slice a file belongs to, grouped by patient.

    Parameters
    ----------
    path : str or os.PathLike
        A folder of ``<id>_<n>.tif`` / ``<id>_<n>_mask.tif`` files (one or several patients),
        a slice file or a mask file.

    Returns
    -------
    dict of str to list of LggSlice
        Patient id to slices sorted by number; empty if there are none.
    """
    path = Path(path)
    if path.is_dir():
        return _group(path, sorted(os.listdir(path)))
    parsed = _parse(path.name)
    if parsed is None or not path.is_file():
        return {}
    pid, n, _ = parsed
    siblings = [
        name for name in os.listdir(path.parent) if (_parse(name) or ("", -1))[:2] == (pid, n)
    ]
    return _group(path.parent, siblings)


def _is_lgg_group(groups: dict[str, list[LggSlice]]) -> bool:
    """Whether some slice has its mask, or some patient id follows the Kaggle pattern."""
    return any(
        _KAGGLE_ID.match(pid) or any(s.mask is not None for s in slices)
        for pid, slices in groups.items()
    )


def is_lgg_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder of Kaggle LGG slices, with or without their masks.

    True when the folder holds an ``<id>_<n>.tif`` slice with its ``<id>_<n>_mask.tif``, or
    a slice named like the Kaggle files (``TCGA_<site>_<id>_<yyyymmdd>_<n>.tif``) without
    masks: a patient to segment. Cheap (file names only) and never raises.

    Parameters
    ----------
    path : str or os.PathLike
        Any path.

    Returns
    -------
    bool
    """
    try:
        if not os.path.isdir(path):
            return False
        groups = _group(Path(path), os.listdir(path))
    except (OSError, TypeError, ValueError):
        return False
    return _is_lgg_group(groups)


def is_lgg_slice(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one Kaggle LGG slice (or the mask of one).

    True for an ``<id>_<n>.tif`` slice with its mask beside it (or such a mask), and for a
    slice named like the Kaggle files (``TCGA_<site>_<id>_<yyyymmdd>_<n>.tif``) without one.
    An image file must also be a single HxWx3 picture (its TIFF header is read), so that a
    slide or a volume that happens to be named ``<x>_<n>.tif`` is not taken for a slice.
    Never raises.

    Parameters
    ----------
    path : str or os.PathLike
        Any path.

    Returns
    -------
    bool
    """
    try:
        if not os.path.isfile(path):
            return False
        groups = find_lgg_slices(path)
        if not _is_lgg_group(groups):
            return False
        parsed = _parse(Path(path).name)
        if parsed is not None and not parsed[2]:
            shape, _ = _header(Path(path))
            return len(shape) == 3 and shape[2] == len(CHANNEL_NAMES)
    except (OSError, TypeError, ValueError):
        return False
    return True


def read_lgg_folder(
    path: str | os.PathLike[str], *, max_patients: int | None = None
) -> list[LazyImage]:
    """Read Kaggle LGG slices lazily: an image and a labels record per patient.

    Parameters
    ----------
    path : str or os.PathLike
        A patient folder, a folder holding several patients' slices, or one slice file
        ``<id>_<n>.tif`` (then that slice and its mask).
    max_patients : int, optional
        Refuse a folder with the slices of more patients than this (each patient makes four
        napari layers); no limit by default.

    Returns
    -------
    list of LazyImage
        For each patient id (sorted): the image (axes ``"zyxc"``, the three channels split
        into layers by ``display["channel_axis"]``, FLAIR visible) and its labels (axes
        ``"zyx"``, uint8 0/1, named ``"<id> FLAIR abnormality"``; only when at least one of
        the patient's slices has a mask). One dask chunk per slice, slice ``n`` at plane
        ``n - first``: ``metadata["slice_numbers"]`` gives the number of every plane, and
        ``metadata["absent_slices"]`` the planes whose number has no file (all zeros).

    Raises
    ------
    ReaderError
        If there are no LGG slices, more patients than ``max_patients``, a slice is
        unreadable or not HxWx3, slices differ in shape, or a mask's shape differs from its
        image (the message names the file).
    """
    groups = find_lgg_slices(path)
    if not groups:
        inside = sorted(p.name for p in Path(path).glob("*/") if is_lgg_folder(p))
        hint = (
            f"; {len(inside)} patient folders inside (e.g. {inside[0]}): open one" if inside else ""
        )
        raise ReaderError(
            path, f"no Kaggle LGG slices (<id>_<n>.tif, with or without <id>_<n>_mask.tif){hint}"
        )
    if max_patients is not None and len(groups) > max_patients:
        first = next(iter(groups.values()))[0].image.name
        raise ReaderError(
            path,
            f"holds the slices of {len(groups)} patients (about {4 * len(groups)} layers at "
            f"once); open one patient at a time: a patient folder (<id>/<id>_<n>.tif, the "
            f"kaggle_3m layout) or one slice file such as {first}",
        )
    out: list[LazyImage] = []
    for pid, slices in groups.items():
        out.extend(_read_patient(Path(path), pid, slices))
    return out


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a TIFF from its header only."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except _TIFF_ERRORS as exc:
        raise ReaderError(path, f"not a readable TIFF file ({exc})") from exc


def _check_shapes(slices: list[LggSlice]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype shared by all slices; every mask must match its image."""
    shape, dtype = _header(slices[0].image)
    if len(shape) != 3 or shape[2] != len(CHANNEL_NAMES):
        raise ReaderError(
            slices[0].image,
            f"expected an HxWx3 slice (pre-contrast, FLAIR, post-contrast), found shape {shape}",
        )
    for s in slices:
        this_shape, this_dtype = _header(s.image) if s is not slices[0] else (shape, dtype)
        if (this_shape, this_dtype) != (shape, dtype):
            raise ReaderError(
                s.image, f"slice is {this_shape} {this_dtype}, other slices {shape} {dtype}"
            )
        if s.mask is not None:
            mask_shape = _header(s.mask)[0]
            if mask_shape != shape[:2]:
                raise ReaderError(
                    s.mask,
                    f"mask shape {mask_shape} differs from its image {s.image.name} {shape[:2]}",
                )
    return shape, dtype


def _read_image(path: str, shape: tuple[int, ...], dtype: str, mtime_ns: int) -> np.ndarray:
    """Decode one slice as a ``(1, *shape)`` chunk (``mtime_ns`` only keys dask's cache)."""
    try:
        data = tifffile.imread(path)
    except _TIFF_ERRORS as exc:
        raise ReaderError(path, f"cannot decode TIFF pixel data ({exc})") from exc
    if data.shape != shape:
        raise ReaderError(path, f"decoded shape {data.shape} differs from its header {shape}")
    return data.astype(dtype, copy=False)[np.newaxis]


def _read_mask(path: str, shape: tuple[int, ...], mtime_ns: int) -> np.ndarray:
    """Decode one mask as a ``(1, *shape)`` uint8 chunk of 0/1."""
    mask = _read_image(path, shape, "uint8", mtime_ns)
    return (mask > 0).astype(np.uint8)


def _image_chunk(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    """A lazy ``(1, *shape)`` chunk for one slice file."""
    task = dask.delayed(_read_image, pure=True)(
        str(path), shape, dtype.str, path.stat().st_mtime_ns
    )
    return da.from_delayed(task, shape=(1, *shape), dtype=dtype)


def _mask_chunk(path: Path | None, shape: tuple[int, ...]) -> da.Array:
    """A lazy ``(1, *shape)`` 0/1 chunk for one mask file (zeros when it is missing)."""
    if path is None:
        return da.zeros((1, *shape), dtype=np.uint8, chunks=(1, *shape))
    task = dask.delayed(_read_mask, pure=True)(str(path), shape, path.stat().st_mtime_ns)
    return da.from_delayed(task, shape=(1, *shape), dtype=np.uint8)


def _read_patient(source: Path, pid: str, slices: list[LggSlice]) -> list[LazyImage]:
    """The image and labels records of one patient, each slice at its number.

    Slice ``n`` goes to plane ``n - first``; a number with no file (the gaps of a selection,
    such as the every-second empty slice of the 40-patient Kaggle set) becomes an all-zero
    plane listed in ``metadata["absent_slices"]`` (plane indices), so distances along z and
    volumes stay true.
    """
    shape, dtype = _check_shapes(slices)
    numbers = [s.number for s in slices]
    plane: list[LggSlice | None] = [None] * (numbers[-1] - numbers[0] + 1)
    for s in slices:
        plane[s.number - numbers[0]] = s
    absent = [z for z, s in enumerate(plane) if s is None]
    common = {
        "layout": "kaggle-lgg",
        "patient_id": pid,
        "slice_numbers": list(range(numbers[0], numbers[-1] + 1)),
        "absent_slices": absent,
        "voxel_size": "unknown",
    }
    image_warnings = [
        "voxel size unknown: the Kaggle LGG layout stores no pixel size or slice spacing; "
        "using 1.0 mm"
    ]
    if absent:
        image_warnings.append(
            f"{len(absent)} of {len(plane)} slice numbers have no file "
            f"({_number_ranges([numbers[0] + z for z in absent])}): they are shown as empty "
            "planes so that every slice sits at its number"
        )
    missing = [s.image.name for s in slices if s.mask is None]
    if len(missing) == len(slices):  # a patient to segment: no reference mask at all
        image_warnings.append("no mask files: a patient to segment (no reference labels)")
    label_warnings = [f"mask missing for {', '.join(missing)}: labelled as background"]
    image = LazyImage(
        levels=[da.concatenate([_image_chunk(s.image, shape, dtype) if s is not None
                                else _zero_chunk(shape, dtype) for s in plane])],
        axes="zyxc",
        scale=(1.0, 1.0, 1.0),
        unit="mm",
        name=pid,
        modality="MR",
        source=str(source),
        metadata={**common, "channels": list(CHANNEL_NAMES),
                  "files": [s.image.name if s is not None else None for s in plane]},
        warnings=image_warnings,
        display={
            "channel_axis": 3,
            "name": [f"{pid} {c}" for c in CHANNEL_NAMES],
            "visible": [c == "FLAIR" for c in CHANNEL_NAMES],
            "colormap": "gray",
        },
    )
    labels = LazyImage(
        levels=[da.concatenate([_mask_chunk(s.mask if s is not None else None, shape[:2])
                                for s in plane])],
        axes="zyx",
        scale=(1.0, 1.0, 1.0),
        unit="mm",
        name=f"{pid} FLAIR abnormality",
        modality="labels",
        source=str(source),
        kind="labels",
        metadata={
            **common,
            "files": [s.mask.name if s is not None and s.mask else None for s in plane],
            "missing_masks": missing,
        },
        warnings=label_warnings if missing else [],
    )
    return [image] if len(missing) == len(slices) else [image, labels]


def _zero_chunk(shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    """An all-zero ``(1, *shape)`` plane for a slice number without a file."""
    return da.zeros((1, *shape), dtype=dtype, chunks=(1, *shape))


def _number_ranges(numbers: list[int]) -> str:
    """``[3, 5, 6, 7, 9]`` -> ``"3, 5-7, 9"``."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
