"""Write MRI and CT label volumes as NIfTI-1 (``.nii``, ``.nii.gz``) in the source's geometry.

A labels layer drawn over a volume is in the plugin's display frame (axes ``z, y, x``). The
writer puts the voxels back in the frame the source volume came in, so that the mask lies
on its scan in any NIfTI tool:

* **NIfTI source** (the layer metadata holds the reader's ``affine``, or ``source`` names a
  ``.nii`` / ``.nii.gz`` file): the voxels are transposed and flipped back to the file's own
  voxel order (the inverse of the reader's reorientation) and the file keeps the source
  affine, its qform/sform codes and its spatial unit.
* **DICOM source** (the metadata holds ``orientation``, the ImageOrientationPatient, and the
  layer's translate is in the slice frame ``(normal, column, row)``, as the DICOM reader
  gives it): the affine is built from the direction cosines, the layer scale and translate,
  and converted from DICOM's LPS to NIfTI's RAS; codes "scanner" (1).
* **Anything else**: only the voxel sizes are kept (codes 0, orientation unknown).

The whole volume is computed in memory (nibabel writes no streams); volumes are small
compared with slides. The file is written atomically.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from ._atomic import atomic_path
from ._write_common import WriterError, fitting_int_type

__all__ = ["GEOMETRY_KEYS", "geometry_metadata", "write_nifti_labels"]

#: Reader metadata keys the writer needs to put labels back in the source's geometry.
GEOMETRY_KEYS = (
    "source",
    "affine",
    "original_shape",
    "display_orientation",
    "qform_code",
    "sform_code",
    "xyz_unit",
    "orientation",
)
_DISPLAY_AXCODES = ("S", "P", "L")  # the NIfTI reader's display frame, see io._nifti
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NIFTI_LABEL_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64")
_NIFTI_UNITS = ("mm", "meter", "micron")


def geometry_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The geometry facts of a reader's ``metadata["neuroseg"]``, for a derived labels layer.

    Parameters
    ----------
    metadata : Mapping
        A layer's ``metadata["neuroseg"]`` (or a :class:`~napari_neuroseg.io.LazyImage`'s
        metadata plus ``source``).

    Returns
    -------
    dict
        The :data:`GEOMETRY_KEYS` present in ``metadata``.
    """
    return {key: metadata[key] for key in GEOMETRY_KEYS if key in metadata}


def write_nifti_labels(
    path: str | os.PathLike[str],
    data: Any,
    *,
    geometry: Mapping[str, Any] | None = None,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
) -> list[str]:
    """Write a 3D labels volume (display axes ``z, y, x``) as NIfTI-1, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target ``.nii`` or ``.nii.gz`` file (``.gz`` is compressed).
    data : array-like or dask array
        Integer labels in the display frame, shape ``(z, y, x)`` (a 2D ``(y, x)`` array is
        one slice).
    geometry : Mapping, optional
        The layer's ``metadata["neuroseg"]`` (see :func:`geometry_metadata` and the module
        notes). Without NIfTI or DICOM geometry only the voxel sizes are stored.
    scale : sequence of float, optional
        Voxel size in mm along ``z, y, x`` (the layer's scale); default 1.
    translate : sequence of float, optional
        Position of voxel ``(0, 0, 0)`` in mm (the layer's translate); default 0.

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    WriterError
        Not a NIfTI file name, float labels, labels that are not 3D, or a shape that does not
        match the source volume. Nothing is written then.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise WriterError(path, "unsupported file type: use .nii or .nii.gz")
    labels = _labels_volume(path, data)
    geometry = dict(geometry or {})
    spacing = _three(path, "scale", scale, 1.0)
    origin = _three(path, "translate", translate, 0.0)
    source = _nifti_source(geometry)
    if source is not None:
        voxels, affine, codes, unit = _in_source_frame(path, labels, *source)
    elif _is_iop(geometry.get("orientation")):
        voxels, affine, codes, unit = _in_dicom_frame(labels, geometry, spacing, origin)
    else:
        voxels = labels.transpose(2, 1, 0)
        affine, codes, unit = np.diag([spacing[2], spacing[1], spacing[0], 1.0]), (0, 0), "mm"
    image = nib.Nifti1Image(np.ascontiguousarray(voxels), affine)
    image.set_qform(affine, code=codes[0])
    image.set_sform(affine, code=codes[1])
    image.header.set_xyzt_units(xyz=unit)
    image.header["descrip"] = b"napari-neuroseg labels"
    payload = image.to_bytes()
    with atomic_path(path) as tmp:
        if path.name.lower().endswith(".gz"):
            with gzip.open(tmp, "wb", compresslevel=6) as f:
                f.write(payload)
        else:
            tmp.write_bytes(payload)
    return [str(path)]


def _labels_volume(path: Path, data: Any) -> np.ndarray:
    """The labels as a 3D numpy array of a NIfTI integer type."""
    array = data.compute() if isinstance(data, da.Array) else np.asarray(data)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3 or 0 in array.shape:
        raise WriterError(path, f"NIfTI labels must be a 3D (z, y, x) volume, not {array.shape}")
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise WriterError(path, f"labels must be integers, not {array.dtype}")
    if array.dtype.name in _NIFTI_LABEL_TYPES:
        return array
    low, high = int(array.min()), int(array.max())
    name = fitting_int_type(low, high, _NIFTI_LABEL_TYPES)
    if name is not None:
        return array.astype(name)
    raise WriterError(path, f"label values {low}..{high} do not fit a NIfTI integer type")


def _three(path: Path, name: str, values: Sequence[float] | None, default: float) -> np.ndarray:
    """The last three values of a layer scale or translate (z, y, x)."""
    if values is None:
        return np.full(3, default)
    out = np.asarray([float(v) for v in values][-3:], dtype=float)
    if out.size == 2:
        out = np.array([default, *out])
    if out.size != 3 or not np.all(np.isfinite(out)):
        raise WriterError(path, f"{name} {list(values)} is not three finite numbers")
    return out


def _nifti_source(
    geometry: Mapping[str, Any],
) -> tuple[np.ndarray, tuple[int, ...], tuple[str, ...], tuple[int, int], str] | None:
    """Affine, file shape, display axcodes, (qform, sform) codes and unit of a NIfTI source."""
    display = tuple(geometry.get("display_orientation") or "".join(_DISPLAY_AXCODES))
    if geometry.get("affine") is not None and geometry.get("original_shape") is not None:
        affine = np.asarray(geometry["affine"], dtype=float)
        shape = tuple(int(n) for n in geometry["original_shape"])
        codes = (int(geometry.get("qform_code", 1)), int(geometry.get("sform_code", 1)))
        unit = str(geometry.get("xyz_unit") or "mm")
        return affine, shape, display, codes, unit if unit in _NIFTI_UNITS else "mm"
    source = str(geometry.get("source") or "")
    if not source.lower().endswith((".nii", ".nii.gz")) or not os.path.isfile(source):
        return None
    try:
        header = nib.load(source).header
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return None  # the source is gone or unreadable: fall back to the layer's geometry
    unit = header.get_xyzt_units()[0]
    return (
        np.asarray(header.get_best_affine(), dtype=float),
        tuple(int(n) for n in header.get_data_shape()),
        display,
        (int(header["qform_code"]), int(header["sform_code"])),
        unit if unit in _NIFTI_UNITS else "mm",
    )


def _in_source_frame(
    path: Path,
    labels: np.ndarray,
    affine: np.ndarray,
    file_shape: tuple[int, ...],
    display: tuple[str, ...],
    codes: tuple[int, int],
    unit: str,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
    """Labels back in the source file's voxel order (inverse of the reader's reorientation)."""
    start = io_orientation(affine)
    if np.isnan(start).any():
        raise WriterError(path, f"the source affine is degenerate: {affine.tolist()}")
    spatial = (*file_shape[:3], 1, 1, 1)[:3]
    to_display = ornt_transform(start, axcodes2ornt(display))
    expected = tuple(spatial[int(i)] for i in np.argsort(to_display[:, 0]))
    if labels.shape != expected:
        raise WriterError(
            path,
            f"labels of shape {labels.shape} do not cover the source volume "
            f"(shape {expected} on screen, {spatial} in the file)",
        )
    voxels = apply_orientation(labels, ornt_transform(axcodes2ornt(display), start))
    return voxels, affine, codes, unit


def _is_iop(value: Any) -> bool:
    """Whether ``value`` is a DICOM ImageOrientationPatient (six numbers)."""
    try:
        return np.asarray(value, dtype=float).shape == (6,)
    except (TypeError, ValueError):
        return False


def _in_dicom_frame(
    labels: np.ndarray, geometry: Mapping[str, Any], spacing: np.ndarray, origin: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
    """Labels as NIfTI ``(i, j, k) = (x, y, z)`` with the RAS affine of a DICOM stack."""
    iop = np.asarray(geometry["orientation"], dtype=float)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[2]
    lps[:3, 1] = col * spacing[1]
    lps[:3, 2] = normal * spacing[0]
    lps[:3, 3] = origin[0] * normal + origin[1] * col + origin[2] * row
    return labels.transpose(2, 1, 0), _LPS_TO_RAS @ lps, (1, 1), "mm"
