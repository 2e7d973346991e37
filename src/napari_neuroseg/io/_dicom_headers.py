"""Read the headers of DICOM image files (and frames) without touching their pixel data.

Each file is parsed with ``stop_before_pixels=True``; the pixel data element's own header
(tag, VR and length: 8 or 12 bytes) is then read where pydicom stopped, so a file without
pixel data is recognised and, for uncompressed transfer syntaxes, truncated pixel data is
caught from the lengths alone.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                             b"UR", b"UT", b"UV"})
UNDEFINED_LENGTH = 0xFFFFFFFF
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
DEFER_SIZE = "4 KB"
HEADER_ERRORS = (
    InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, IndexError,
    AttributeError, OverflowError, NotImplementedError, struct.error,
)

RejectKind = Literal["not_image", "corrupt", "unsupported"]


class RejectedFile(Exception):
    """A file that holds no usable image: ``kind`` says whether to ignore it or warn."""

    def __init__(
        self, path: Path, kind: RejectKind, reason: str, series_uid: str | None = None
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.reason = reason
        self.series_uid = series_uid
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class SliceHeader:
    """What the reader needs to know about one slice (a file, or one frame of a file)."""

    path: Path
    frame: int | None
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    rows: int
    cols: int
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    slope: float
    intercept: float
    bits_stored: int
    signed: bool
    transfer_syntax: str
    window: tuple[float, float] | None
    gantry_tilt_deg: float | None
    slice_thickness: float | None
    patient_id: str
    study_date: str
    manufacturer: str
    instance_number: int | None

    @property
    def label(self) -> str:
        """The file name, with the frame number for a multi-frame file."""
        return self.path.name if self.frame is None else f"{self.path.name}[frame {self.frame}]"


def has_dicm_marker(path: Path) -> bool:
    """Whether ``path`` is a file with ``DICM`` at byte 128 (never raises)."""
    try:
        with open(path, "rb") as fp:
            fp.seek(128)
            return fp.read(4) == b"DICM"
    except (OSError, ValueError, TypeError):
        return False


def _number(value: Any, default: float | None = None) -> float | None:
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _vector(value: Any, size: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == size else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _pixel_element(fp: Any, ds: Dataset, size: int) -> tuple[int, int, int] | None:
    """Read the pixel data element header at ``fp``: ``(tag, header bytes, value length)``."""
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = False, True
    start = fp.tell()
    raw = fp.read(12)
    if len(raw) < 8:
        return None
    end = "<" if little else ">"
    group, element = struct.unpack(f"{end}HH", raw[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        return None
    if implicit:
        header, length = 8, struct.unpack(f"{end}I", raw[4:8])[0]
    elif raw[4:6] in LONG_LENGTH_VRS:
        if len(raw) < 12:
            raise RejectedFile(Path(fp.name), "corrupt", "the pixel data element is cut off")
        header, length = 12, struct.unpack(f"{end}I", raw[8:12])[0]
    else:
        header, length = 8, struct.unpack(f"{end}H", raw[6:8])[0]
    if length != UNDEFINED_LENGTH and start + header + length > size:
        raise RejectedFile(
            Path(fp.name),
            "corrupt",
            f"pixel data is truncated: the header announces {length} bytes but the file "
            f"holds {max(size - start - header, 0)}",
        )
    return tag, header, length


def _expected_bytes(ds: Dataset, frames: int) -> int:
    bits = int(ds.get("BitsAllocated") or 16)
    samples = int(ds.get("SamplesPerPixel") or 1)
    n_bits = int(ds.Rows) * int(ds.Columns) * frames * samples * bits
    return (n_bits + 7) // 8


def _read_dataset(path: Path) -> tuple[Dataset, tuple[int, int, int] | None]:
    """Parse the header of ``path`` and locate its pixel data element (None if absent)."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        ds = dcmread(fp, stop_before_pixels=True, defer_size=DEFER_SIZE)
        if fp.tell() > size:
            raise RejectedFile(path, "corrupt", "unreadable DICOM header (it runs past the end "
                               "of the file: truncated or damaged)")
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
        if syntax.is_deflated:
            return ds, ((0x7FE00010, 0, UNDEFINED_LENGTH) if "Rows" in ds else None)
        try:
            return ds, _pixel_element(fp, ds, size)
        except RejectedFile as exc:
            exc.series_uid = str(ds.get("SeriesInstanceUID", "")) or None
            raise


def _check_image(path: Path, ds: Dataset, element: tuple[int, int, int] | None) -> int:
    """Reject files that are not usable greyscale images; return the number of frames."""
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        raise RejectedFile(path, "not_image", "is a DICOMDIR, not an image")
    if not sop_class:
        raise RejectedFile(path, "corrupt", "unreadable DICOM header (no SOPClassUID)")
    name = UID(sop_class).name
    if element is None and "Image Storage" in name:
        raise RejectedFile(path, "corrupt", f"no pixel data although it is a {name} object "
                           "(truncated?)")
    if element is None:
        raise RejectedFile(path, "not_image", f"has no pixel data ({name})")
    if "Rows" not in ds or "Columns" not in ds:
        raise RejectedFile(path, "corrupt", "has pixel data but no Rows/Columns")
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise RejectedFile(
            path, "unsupported", f"is a colour image ({photometric}); only greyscale is read"
        )
    frames = _integer(ds.get("NumberOfFrames")) or 1
    length = element[2]
    if length != UNDEFINED_LENGTH and length < _expected_bytes(ds, frames):
        raise RejectedFile(
            path,
            "corrupt",
            f"pixel data is too short: {length} bytes for {frames} frame(s) of "
            f"{ds.Rows}x{ds.Columns} at {ds.get('BitsAllocated')} bits "
            f"({_expected_bytes(ds, frames)} expected)",
        )
    return frames


def _window(item: Dataset | None) -> tuple[float, float] | None:
    if item is None:
        return None
    centre, width = _number(item.get("WindowCenter")), _number(item.get("WindowWidth"))
    return None if centre is None or width is None or width <= 0 else (centre, width)


def _base_header(path: Path, ds: Dataset) -> SliceHeader:
    uid = str(ds.get("SeriesInstanceUID", "") or f"(no SeriesInstanceUID) {path.parent}")
    spacing = _vector(ds.get("PixelSpacing"), 2)
    return SliceHeader(
        path=path,
        frame=None,
        series_uid=uid,
        series_number=_integer(ds.get("SeriesNumber")),
        series_description=str(ds.get("SeriesDescription", "") or "").strip(),
        modality=str(ds.get("Modality", "") or "").strip().upper(),
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        position=_vector(ds.get("ImagePositionPatient"), 3),
        orientation=_vector(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=spacing,
        slope=_number(ds.get("RescaleSlope"), 1.0) or 1.0,
        intercept=_number(ds.get("RescaleIntercept"), 0.0) or 0.0,
        bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16),
        signed=int(ds.get("PixelRepresentation") or 0) == 1,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
        window=_window(ds),
        gantry_tilt_deg=_number(ds.get("GantryDetectorTilt")),
        slice_thickness=_number(ds.get("SliceThickness")),
        patient_id=str(ds.get("PatientID", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        instance_number=_integer(ds.get("InstanceNumber")),
    )


def _macro(groups: Dataset | None, name: str) -> Dataset | None:
    sequence = groups.get(name) if groups is not None else None
    return sequence[0] if sequence else None


def _frame_item(per_frame: Dataset | None, shared: Dataset | None, name: str) -> Dataset | None:
    return _macro(per_frame, name) or _macro(shared, name)


def _frame_headers(path: Path, ds: Dataset, base: SliceHeader, frames: int) -> list[SliceHeader]:
    """One header per frame of an enhanced multi-frame file (functional groups)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if not per_frame or len(per_frame) != frames:
        raise RejectedFile(
            path,
            "unsupported",
            f"is a multi-frame file ({frames} frames) without per-frame positions "
            "(PerFrameFunctionalGroupsSequence); only enhanced CT/MR multi-frame files are read",
        )
    headers = []
    for index, groups in enumerate(per_frame):
        plane = _frame_item(groups, shared, "PlanePositionSequence")
        orient = _frame_item(groups, shared, "PlaneOrientationSequence")
        measures = _frame_item(groups, shared, "PixelMeasuresSequence")
        rescale = _frame_item(groups, shared, "PixelValueTransformationSequence")
        voi = _frame_item(groups, shared, "FrameVOILUTSequence")
        headers.append(replace(
            base,
            frame=index,
            position=_vector(plane.get("ImagePositionPatient"), 3) if plane else None,
            orientation=_vector(orient.get("ImageOrientationPatient"), 6) if orient else None,
            pixel_spacing=_vector(measures.get("PixelSpacing"), 2) if measures else None,
            slice_thickness=_number(measures.get("SliceThickness")) if measures else None,
            slope=_number(rescale.get("RescaleSlope"), 1.0) if rescale else base.slope,
            intercept=_number(rescale.get("RescaleIntercept"), 0.0) if rescale else base.intercept,
            window=_window(voi) or base.window,
        ))
    return headers


def read_slice_headers(path: str | os.PathLike[str]) -> list[SliceHeader]:
    """The slice headers of one DICOM image file (one per frame), reading no pixel data.

    Parameters
    ----------
    path : str or path-like
        A DICOM file.

    Returns
    -------
    list of SliceHeader
        One entry, or one per frame of an enhanced multi-frame file.

    Raises
    ------
    RejectedFile
        If the file is not an image (``kind="not_image"``), is damaged (``"corrupt"``) or is
        an image this reader does not handle (``"unsupported"``).
    """
    file = Path(path)
    try:
        ds, element = _read_dataset(file)
    except RejectedFile:
        raise
    except HEADER_ERRORS as exc:
        kind: RejectKind = "corrupt" if has_dicm_marker(file) else "not_image"
        reason = "unreadable DICOM header" if kind == "corrupt" else "not a DICOM file"
        raise RejectedFile(file, kind, f"{reason} ({type(exc).__name__}: {exc})") from exc
    uid = str(ds.get("SeriesInstanceUID", "")) or None
    try:
        frames = _check_image(file, ds, element)
        base = _base_header(file, ds)
        return [base] if frames == 1 else _frame_headers(file, ds, base, frames)
    except RejectedFile as exc:
        exc.series_uid = uid
        raise
    except HEADER_ERRORS as exc:
        reason = f"unreadable header value ({type(exc).__name__}: {exc})"
        raise RejectedFile(file, "corrupt", reason, uid) from exc


@dataclass
class HeaderScan:
    """The result of reading the headers of many candidate files."""

    slices: list[SliceHeader]
    rejected: list[RejectedFile]
    n_files: int

    def of_kind(self, kind: RejectKind) -> list[RejectedFile]:
        """The rejected files of one kind."""
        return [r for r in self.rejected if r.kind == kind]


def scan_headers(paths: Iterable[Path]) -> HeaderScan:
    """Read the slice headers of ``paths``, collecting the files that hold no usable image."""
    slices: list[SliceHeader] = []
    rejected: list[RejectedFile] = []
    count = 0
    for path in paths:
        count += 1
        try:
            slices.extend(read_slice_headers(path))
        except RejectedFile as exc:
            rejected.append(exc)
    return HeaderScan(slices, rejected, count)


def walk_files(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` (recursively, sorted, hidden names and DICOMDIR skipped)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.upper() != "DICOMDIR":
                yield Path(root) / name
