"""Group slice headers into series and place each series' slices in space."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_neuroseg.io._dicom_headers import HeaderScan, RejectedFile, SliceHeader
from napari_neuroseg.io._geometry import (
    DUPLICATE_TOLERANCE_MM,
    StackGeometry,
    describe_spacing,
    orientation_label,
    stack_geometry,
)
from napari_neuroseg.io._types import ReaderError

DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class SeriesDropped(Exception):
    """A series none of whose slices can be placed in space."""


@dataclass
class DicomSeries:
    """One DICOM series, its slices sorted by position along the slice normal.

    Built from headers only: no pixel data has been read.

    Attributes
    ----------
    uid : str
        SeriesInstanceUID.
    description : str
        SeriesDescription (may be empty).
    number : int or None
        SeriesNumber.
    modality : str
        The Modality tag (``"CT"``, ``"MR"``, ...).
    files : list of pathlib.Path
        The file of every slice in position order (a multi-frame file repeats).
    positions_mm : list of float
        Slice positions along the normal, ascending.
    spacing : tuple of float
        Voxel size ``(dz, dy, dx)`` in mm: mean gap along the normal, then PixelSpacing.
    tilt_deg : float
        Angle between the stacking direction and the slice normal (gantry tilt).
    shape : tuple of int
        ``(slices, rows, cols)``.
    notes : list of str
        Problems found while grouping (skipped files, duplicates, missing tags).
    source : str
        The folder, DICOMDIR or file(s) it was found in.
    slices : list of SliceHeader
        The slice headers in position order.
    geometry : StackGeometry
        Sorted positions, in-plane offsets, normal and tilt.
    skipped : list of str
        ``"file: reason"`` for every file of this series (or of unknown series) left out.
    """

    uid: str
    description: str
    number: int | None
    modality: str
    files: list[Path]
    positions_mm: list[float]
    spacing: tuple[float, float, float]
    tilt_deg: float
    shape: tuple[int, int, int]
    notes: list[str]
    source: str
    slices: list[SliceHeader] = field(repr=False)
    geometry: StackGeometry = field(repr=False)
    skipped: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Display name, e.g. ``"Head 2.5mm (#3)"``."""
        return series_name(self.description, self.number, self.modality)

    @property
    def spacings_mm(self) -> list[float]:
        """Gaps between neighbouring slices along the normal."""
        return self.geometry.spacings_mm

    @property
    def uniform_spacing(self) -> bool:
        """Whether all gaps agree to within 1 %."""
        return self.geometry.uniform

    @property
    def orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient shared by the slices."""
        return self.slices[0].orientation or DEFAULT_ORIENTATION

    @property
    def gantry_tilt_deg(self) -> float | None:
        """The GantryDetectorTilt tag of the first slice, if present."""
        return self.slices[0].gantry_tilt_deg

    @property
    def warnings(self) -> list[str]:
        """Everything the user should know about the series as stored."""
        return self.notes + geometry_warnings(self, resampled=False)


def series_name(description: str, number: int | None, modality: str) -> str:
    """``"<description> (#<number>)"``, falling back to ``"<modality> series"``."""
    label = description or f"{modality or 'DICOM'} series"
    return label if number is None else f"{label} (#{number})"


def geometry_warnings(series: DicomSeries, resampled: bool) -> list[str]:
    """Messages about gantry tilt and uneven spacing (worded for a resampled volume or not)."""
    out = []
    geometry = series.geometry
    if geometry.tilted:
        tag = series.gantry_tilt_deg
        tag_text = "" if tag is None else f" (GantryDetectorTilt {tag:+g})"
        fix = ("corrected by resampling" if resampled else
               "the stack as stored is sheared; read with resample=True to correct it")
        out.append(f"{series.name}: gantry tilt of {geometry.tilt_deg:.1f} deg{tag_text}: "
                   f"slices shift in-plane from one to the next; {fix}")
    if not geometry.uniform:
        fix = ("resampled to a uniform grid" if resampled else
               f"the volume uses the mean {series.spacing[0]:.2f} mm; read with resample=True "
               "for a uniform grid")
        out.append(f"{series.name}: uneven slice spacing "
                   f"{describe_spacing(geometry.spacings_mm)}; {fix}")
    return out


def _drop_unplaced(slices: list[SliceHeader], notes: list[str], skipped: list[str]
                   ) -> list[SliceHeader]:
    if len(slices) == 1 and (slices[0].position is None or slices[0].orientation is None):
        notes.append(f"{slices[0].label}: no ImagePositionPatient/ImageOrientationPatient; "
                     "placed at the origin, axial")
        return slices
    kept = [s for s in slices if s.position is not None and s.orientation is not None]
    for s in slices:
        if s.position is None or s.orientation is None:
            skipped.append(f"{s.label}: no ImagePositionPatient/ImageOrientationPatient")
    if not kept:
        raise SeriesDropped("no slice has ImagePositionPatient and ImageOrientationPatient")
    return kept


def _majority_orientation(slices: list[SliceHeader], skipped: list[str]) -> list[SliceHeader]:
    def key(s: SliceHeader) -> tuple[float, ...]:
        return tuple(round(v, 3) + 0.0 for v in (s.orientation or DEFAULT_ORIENTATION))

    counts = Counter(key(s) for s in slices)
    best = counts.most_common(1)[0][0]
    for s in slices:
        if key(s) != best:
            skipped.append(f"{s.label}: orientation differs from the rest of the series")
    return [s for s in slices if key(s) == best]


def _check_matrix(slices: list[SliceHeader], name: str) -> None:
    sizes = Counter((s.rows, s.cols) for s in slices)
    if len(sizes) == 1:
        return
    (rows, cols), count = sizes.most_common(1)[0]
    odd = next(s for s in slices if (s.rows, s.cols) != (rows, cols))
    raise ReaderError(
        odd.path,
        f"series {name!r} mixes matrix sizes: this file is {odd.rows}x{odd.cols} but "
        f"{count} of its {len(slices)} images are {rows}x{cols}; split the series or "
        "remove the odd files",
    )


def _drop_duplicates(slices: list[SliceHeader], name: str, notes: list[str]
                     ) -> list[SliceHeader]:
    geometry = stack_geometry([s.position or (0, 0, 0) for s in slices], slices[0].orientation
                              or DEFAULT_ORIENTATION)
    kept: list[SliceHeader] = []
    dropped: list[str] = []
    last = None
    for index, position in zip(geometry.order, geometry.positions_mm, strict=True):
        if last is not None and abs(position - last) < DUPLICATE_TOLERANCE_MM:
            dropped.append(slices[index].label)
            continue
        kept.append(slices[index])
        last = position
    if dropped:
        shown = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
        notes.append(f"{name}: {len(dropped)} image(s) share a position with another image "
                     f"(several echoes or time points?); only the first at each position is used: "
                     f"{shown}")
    return kept


def build_series(uid: str, slices: list[SliceHeader], source: str,
                 skipped: list[str]) -> DicomSeries:
    """Place the slices of one series in space.

    Parameters
    ----------
    uid : str
        SeriesInstanceUID.
    slices : list of SliceHeader
        The series' slices, in any order.
    source : str
        Where they were found (for messages).
    skipped : list of str
        Files already left out for this series (``"file: reason"``); the series gets a copy
        extended with the slices left out here.

    Raises
    ------
    ReaderError
        If the slices have different matrix sizes.
    SeriesDropped
        If no slice can be placed.
    """
    slices = sorted(slices, key=lambda s: (str(s.path), s.frame or 0))
    first = slices[0]
    name = series_name(first.series_description, first.series_number, first.modality)
    notes: list[str] = []
    skipped = list(skipped)
    slices = _majority_orientation(_drop_unplaced(slices, notes, skipped), skipped)
    _check_matrix(slices, name)
    slices = _drop_duplicates(slices, name, notes)
    orientation = slices[0].orientation or DEFAULT_ORIENTATION
    geometry = stack_geometry([s.position or (0.0, 0.0, 0.0) for s in slices], orientation)
    slices = [slices[i] for i in geometry.order]
    pixel = slices[0].pixel_spacing
    if pixel is None:
        notes.append(f"{name}: no PixelSpacing; assuming 1 mm pixels")
        pixel = (1.0, 1.0)
    dz = geometry.mean_spacing(default=first.slice_thickness or 1.0)
    if skipped:
        notes.insert(0, f"{name}: skipped {len(skipped)} file(s): " + "; ".join(skipped))
    return DicomSeries(
        uid=uid,
        description=first.series_description,
        number=first.series_number,
        modality=first.modality,
        files=[s.path for s in slices],
        positions_mm=list(geometry.positions_mm),
        spacing=(dz, float(pixel[0]), float(pixel[1])),
        tilt_deg=geometry.tilt_deg,
        shape=(len(slices), slices[0].rows, slices[0].cols),
        notes=notes,
        source=source,
        slices=slices,
        geometry=geometry,
        skipped=skipped,
    )


def _reject_text(reject: RejectedFile) -> str:
    return f"{reject.path.name}: {reject.reason}"


def group_series(scan: HeaderScan, source: str) -> tuple[list[DicomSeries], list[str]]:
    """Group a header scan into sorted series.

    Files rejected as corrupt or unsupported are listed in the ``skipped`` of their series,
    or of every series when their series is unknown. Returns the series and a message for
    every series that had to be dropped entirely.
    """
    by_uid: dict[str, list[SliceHeader]] = defaultdict(list)
    for header in scan.slices:
        by_uid[header.series_uid].append(header)
    loose = [r for r in scan.rejected if r.kind != "not_image" and r.series_uid not in by_uid]
    loose_texts = [_reject_text(r) for r in loose]
    problems: list[str] = []
    out = []
    for uid, slices in by_uid.items():
        own = [_reject_text(r) for r in scan.rejected
               if r.kind != "not_image" and r.series_uid == uid]
        try:
            out.append(build_series(uid, slices, source, own + loose_texts))
        except SeriesDropped as exc:
            problems.append(f"series {uid}: {exc}")
    out.sort(key=_series_key)
    return out, problems


def _series_key(series: DicomSeries) -> tuple[bool, int, str, str]:
    number = series.number if series.number is not None else 0
    return (series.number is None, number, series.description, series.uid)


def select_series(found: Iterable[DicomSeries], which: str | int, source: str) -> DicomSeries:
    """Pick one series by SeriesInstanceUID (str) or by SeriesNumber, then index (int)."""
    found = list(found)
    listing = "; ".join(f"[{i}] {s.name} uid={s.uid}" for i, s in enumerate(found))
    if isinstance(which, str):
        matches = [s for s in found if s.uid == which]
    else:
        matches = [s for s in found if s.number == int(which)]
        if not matches and 0 <= int(which) < len(found):
            matches = [found[int(which)]]
    if len(matches) != 1:
        problem = "no" if not matches else "more than one"
        raise ReaderError(source, f"{problem} series matches {which!r}; found: {listing}")
    return matches[0]


def orientation_text(series: DicomSeries) -> str:
    """``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"oblique"``."""
    return orientation_label(series.orientation)
