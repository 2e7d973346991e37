"""A synthetic head-CT phantom written as a DICOM series (for tests, sample data and the demo).

The phantom lives in patient coordinates (mm, DICOM LPS axes, head centred at the origin):
an ellipsoidal head with scalp (40 HU), skull (1000 HU), grey (40 HU) and white (30 HU)
matter, two ventricles (5 HU) and an optional hyperdense lesion (65 HU), in air (-1000 HU),
plus mild Gaussian noise (3 HU). Each slice samples it where the slice lies, so a tilted
series has the same geometry as a real tilted scan.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

AIR_HU = -1000.0
NOISE_HU = 3.0
SAMPLE_FOLDER = "neuroseg-sample-ct"
SAMPLE_SLICES = 24
SAMPLE_SIZE = 256
SAMPLE_SPACING = (5.0, 0.9, 0.9)


@dataclass(frozen=True)
class HeadPhantom:
    """An analytic head in patient coordinates (mm), centred at the origin.

    Parameters
    ----------
    semi_axes : (float, float, float)
        Outer half-widths of the head along x (left), y (posterior) and z (superior).
    lesion : bool
        Include the hyperdense lesion.
    """

    semi_axes: tuple[float, float, float]
    lesion: bool = True

    @classmethod
    def fitting(cls, fov_mm: float, extent_mm: float, lesion: bool = True) -> HeadPhantom:
        """A head that fills a square field of view ``fov_mm`` and a stack ``extent_mm`` long."""
        return cls((0.36 * fov_mm, 0.44 * fov_mm, 0.55 * max(extent_mm, 0.5 * fov_mm)), lesion)

    @property
    def lesion_centre_mm(self) -> tuple[float, float, float]:
        """Centre of the lesion (right frontal, slightly above the middle)."""
        ax, ay, az = self.semi_axes
        return (0.35 * ax, -0.3 * ay, 0.1 * az)

    @property
    def lesion_radius_mm(self) -> float:
        """Radius of the spherical lesion."""
        return 0.22 * min(self.semi_axes[:2])

    def _radius(self, points: np.ndarray, centre: tuple[float, ...], axes: tuple[float, ...]
                ) -> np.ndarray:
        scaled = (points - np.asarray(centre)) / np.asarray(axes)
        return np.sqrt(np.sum(scaled * scaled, axis=-1))

    def hu(self, points: np.ndarray) -> np.ndarray:
        """Noise-free HU at ``points`` (array of shape ``(..., 3)``, mm)."""
        ax, ay, az = self.semi_axes
        rho = self._radius(points, (0.0, 0.0, 0.0), self.semi_axes)
        out = np.full(rho.shape, AIR_HU, dtype=np.float32)
        out[rho < 1.0] = 40.0  # scalp
        out[rho < 0.96] = 1000.0  # skull
        out[rho < 0.88] = 40.0  # grey matter
        out[rho < 0.78] = 30.0  # white matter
        for side in (-1.0, 1.0):
            centre = (side * 0.12 * ax, 0.0, 0.05 * az)
            out[self._radius(points, centre, (0.07 * ax, 0.3 * ay, 0.25 * az)) < 1.0] = 5.0
        if self.lesion:
            r = self.lesion_radius_mm
            out[self._radius(points, self.lesion_centre_mm, (r, r, r)) < 1.0] = 65.0
        return out


def slice_geometry(
    n_slices: int, spacing: tuple[float, float, float], size: int, tilt_deg: float, uneven: bool
) -> tuple[np.ndarray, tuple[float, ...]]:
    """ImagePositionPatient of every slice and the shared ImageOrientationPatient.

    Slices are spaced ``spacing[0]`` apart along their normal (the second half 1.5 times
    wider when ``uneven``); like a tilted GE gantry, the orientation is rows ``(1, 0, 0)``,
    columns ``(0, cos t, -sin t)`` and the positions advance along the table axis z only.
    The stack is centred on the origin.
    """
    t = math.radians(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), -math.sin(t)])
    gaps = np.full(max(n_slices - 1, 0), float(spacing[0]))
    if uneven:
        gaps[(n_slices - 1) // 2:] *= 1.5
    along_normal = np.concatenate([[0.0], np.cumsum(gaps)])
    table_z = along_normal / math.cos(t)
    table_z -= table_z.mean()
    half = (size - 1) / 2
    corner = -half * spacing[2] * row - half * spacing[1] * col
    positions = corner + table_z[:, None] * np.array([0.0, 0.0, 1.0])
    return positions, (*row.tolist(), *col.tolist())


def _slice_points(position: np.ndarray, orientation: tuple[float, ...], size: int,
                  spacing: tuple[float, float, float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    i = np.arange(size)[:, None, None] * spacing[1] * col
    j = np.arange(size)[None, :, None] * spacing[2] * row
    return position + i + j


def _stored(hu: np.ndarray, slope: float, intercept: float) -> tuple[np.ndarray, int, bool]:
    """Stored values, BitsStored and signedness for ``hu`` under the rescale."""
    values = np.rint((hu - intercept) / slope)
    if values.min() >= 0 and values.max() < 4096:
        return values.astype(np.uint16), 12, False
    if values.min() >= 0 and values.max() < 65536:
        return values.astype(np.uint16), 16, False
    return np.clip(values, -32768, 32767).astype(np.int16), 16, True


def _ds_number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class _SeriesSpec:
    number: int
    n_slices: int
    spacing: tuple[float, float, float]
    uid: str


def _dataset(spec: _SeriesSpec, k: int, instance: int, position: np.ndarray,
             orientation: tuple[float, ...], study: tuple[str, str], size: int,
             tilt_deg: float) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[spec.uid, str(k)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = study
    ds.SeriesInstanceUID = spec.uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Phantom^Head", "NEUROSEG-PHANTOM", "", "O")
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
    ds.ReferringPhysicianName, ds.Manufacturer = "", "napari-neuroseg phantom"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", spec.number, instance
    ds.SeriesDescription = f"Head {spec.spacing[0]:g}mm"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [_ds_number(v) for v in position]
    ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
    ds.PixelSpacing = [_ds_number(spec.spacing[1]), _ds_number(spec.spacing[2])]
    ds.SliceThickness = _ds_number(spec.spacing[0])
    ds.SliceLocation = _ds_number(float(position[2]))
    ds.GantryDetectorTilt = _ds_number(tilt_deg)
    ds.PositionReferenceIndicator, ds.KVP = "", "120"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.WindowCenter, ds.WindowWidth = "40", "80"
    return ds


def _write_atomic(ds: Dataset, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def _damage(path: Path, how: str, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    if how == "truncate":
        damaged = data[: len(data) - len(data) // 3]
    else:
        damaged = data[:132] + rng.integers(0, 256, 600, dtype=np.uint8).tobytes() + data[732:]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(damaged)
    os.replace(tmp, path)


def _write_one_series(directory: Path, spec: _SeriesSpec, *, size: int, tilt_deg: float,
                      uneven: bool, phantom: HeadPhantom, study: tuple[str, str],
                      slope: float, intercept: float, names: np.ndarray,
                      instances: np.ndarray, seed: int) -> list[Path]:
    rng = np.random.default_rng([seed, spec.number])
    positions, orientation = slice_geometry(spec.n_slices, spec.spacing, size, tilt_deg, uneven)
    paths = []
    for k, position in enumerate(positions):
        hu = phantom.hu(_slice_points(position, orientation, size, spec.spacing))
        hu = hu + rng.normal(0.0, NOISE_HU, hu.shape).astype(np.float32)
        stored, bits, signed = _stored(hu, slope, intercept)
        ds = _dataset(spec, k, int(instances[k]), position, orientation, study, size, tilt_deg)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
        ds.PixelRepresentation = int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = _ds_number(slope), _ds_number(intercept)
        ds.RescaleType = "HU"
        ds.PixelData = stored.tobytes()
        path = directory / f"CT{spec.number}_{int(names[k]):04d}.dcm"
        _write_atomic(ds, path)
        paths.append(path)
    return paths


def write_ct_series(
    directory: str | os.PathLike[str],
    *,
    n_slices: int = 24,
    size: int = 128,
    spacing: tuple[float, float, float] = (5.0, 0.7, 0.7),
    tilt_deg: float = 0.0,
    uneven: bool = False,
    shuffle_names: bool = False,
    shuffle_instance_numbers: bool = False,
    corrupt: Literal["header", "truncate"] | None = None,
    series: int = 1,
    lesion: bool = True,
    seed: int = 0,
    slope: float = 1,
    intercept: float = -1024,
) -> list[Path]:
    """Write a synthetic head-CT series (values in HU) as DICOM files.

    Parameters
    ----------
    directory : str or path-like
        Folder to write into (created if needed).
    n_slices : int
        Number of slices.
    size : int
        Rows and columns.
    spacing : (float, float, float)
        Slice gap along the slice normal, row spacing and column spacing, in mm.
    tilt_deg : float
        Gantry tilt: the slices are tilted about the x axis and shifted along the table.
    uneven : bool
        Make the second half of the gaps 1.5 times wider.
    shuffle_names, shuffle_instance_numbers : bool
        Number the files / InstanceNumbers in a random order instead of by position.
    corrupt : {None, "header", "truncate"}
        Damage the slice at index ``n_slices // 2`` (position order): garble its header or
        cut off the last third of its pixel data.
    series : int
        1, or 2 to add a second series (``n_slices // 2`` slices at twice the gap,
        SeriesNumber 2) to the same folder.
    lesion : bool
        Include the hyperdense lesion.
    seed : int
        Seeds the noise, the shuffles and the UIDs.
    slope, intercept : float
        RescaleSlope and RescaleIntercept of the stored values.

    Returns
    -------
    list of pathlib.Path
        The files written, in position order, series 1 first.
    """
    if series not in (1, 2) or n_slices < 1 or size < 8 or slope == 0 or abs(tilt_deg) >= 60:
        raise ValueError("need series in (1, 2), n_slices >= 1, size >= 8, slope != 0 and "
                         "|tilt_deg| < 60")
    if corrupt not in (None, "header", "truncate"):
        raise ValueError(f"corrupt must be None, 'header' or 'truncate', not {corrupt!r}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gap, dy, dx = (float(v) for v in spacing)
    phantom = HeadPhantom.fitting(size * dy, (n_slices - 1) * gap, lesion)
    study = (generate_uid(entropy_srcs=[f"neuroseg-ct-study-{seed}"]),
             generate_uid(entropy_srcs=[f"neuroseg-ct-frame-{seed}"]))
    specs = [_SeriesSpec(1, n_slices, (gap, dy, dx),
                         generate_uid(entropy_srcs=[f"ct-{seed}-1"]))]
    if series == 2:
        specs.append(_SeriesSpec(2, max(n_slices // 2, 1), (2 * gap, dy, dx),
                                 generate_uid(entropy_srcs=[f"ct-{seed}-2"])))
    written = []
    for spec in specs:
        order = np.arange(1, spec.n_slices + 1)
        names = rng.permutation(order) if shuffle_names else order
        instances = rng.permutation(order) if shuffle_instance_numbers else order
        written.append(_write_one_series(
            folder, spec, size=size, tilt_deg=tilt_deg, uneven=uneven, phantom=phantom,
            study=study, slope=slope, intercept=intercept, names=names, instances=instances,
            seed=seed))
    if corrupt is not None:
        _damage(written[0][n_slices // 2], corrupt, np.random.default_rng([seed, 99]))
    return [path for paths in written for path in paths]


def _remove_incomplete_sample(target: Path) -> None:
    """Delete a half-made sample folder, but only if it holds nothing but our files."""
    entries = list(target.iterdir())
    if any(not (e.is_file() and e.name.lstrip(".").startswith("CT")) for e in entries):
        raise FileExistsError(f"{target} exists and holds other files; move it away first")
    for entry in entries:
        entry.unlink()
    target.rmdir()


def make_sample_ct(directory: str | os.PathLike[str]) -> Path:
    """Write the sample head-CT series once (24 slices of 256 x 256) and return its folder.

    The folder ``<directory>/neuroseg-sample-ct`` is reused when it already holds the
    series; it is written under a temporary name first, so it is never half-written.

    Parameters
    ----------
    directory : str or path-like
        Parent folder (created if needed).

    Returns
    -------
    pathlib.Path
        The series folder.
    """
    parent = Path(directory)
    target = parent / SAMPLE_FOLDER
    if len(list(target.glob("*.dcm"))) == SAMPLE_SLICES:
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SAMPLE_FOLDER}-", dir=parent))
    try:
        write_ct_series(tmp, n_slices=SAMPLE_SLICES, size=SAMPLE_SIZE, spacing=SAMPLE_SPACING)
        if target.exists():
            _remove_incomplete_sample(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if len(list(target.glob("*.dcm"))) != SAMPLE_SLICES:  # not written by a rival
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
