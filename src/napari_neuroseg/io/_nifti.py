"""NIfTI-1/NIfTI-2 volumes (``.nii``, ``.nii.gz``), read lazily and shown in a fixed orientation.

Display orientation
-------------------
Whatever the voxel order of the file, the volume is shown with axes ``(z, y, x)`` pointing
to patient Superior, Posterior and Left (``"SPL"``): axial slices from feet to head, each
seen as in radiology (anterior at the top, the patient's right on the left of the screen),
the way an axial DICOM series with the usual orientation appears. The nearest axis-aligned
orientation is found with :func:`nibabel.orientations.io_orientation`; the dask array is
only transposed and flipped (nothing is resampled, nothing is loaded). Oblique volumes are
shown in that nearest orientation, with a warning.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask.array as da
import nibabel as nib
import numpy as np
from dask.base import tokenize
from nibabel.affines import obliquity
from nibabel.orientations import aff2axcodes, axcodes2ornt, io_orientation, ornt_transform

from ._logcapture import captured_log
from ._types import LazyImage, ReaderError

#: The direction each display axis (z, y, x) points to.
DISPLAY_AXCODES = ("S", "P", "L")
_MM_PER_NIFTI_UNIT = MappingProxyType({"mm": 1.0, "meter": 1000.0, "micron": 1e-3})
_NIFTI_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    struct.error,
    nib.filebasedimages.ImageFileError,
)
_OBLIQUE_DEGREES = 0.5


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a NIfTI file (name and magic bytes). Never raises.

    Parameters
    ----------
    path : str or os.PathLike
        Any path.

    Returns
    -------
    bool
        True for an existing ``.nii`` / ``.nii.gz`` file with a NIfTI-1 or NIfTI-2 magic.
    """
    try:
        name = os.fspath(path).lower()
        if not name.endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
            return False
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(348)
    except (OSError, EOFError, TypeError, ValueError, zlib.error):
        return False
    return head[344:347] in (b"n+1", b"ni1") or head[4:7] == b"n+2"


def read_nifti(path: str | os.PathLike[str]) -> LazyImage:
    """Read a NIfTI volume lazily, reoriented for display (see the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    LazyImage
        Axes ``"zyx"`` (3D), ``"tzyx"`` (4D: the fourth NIfTI dimension, usually time, first
        so napari gives it a slider) or ``"tzyxc"`` (5D: the fifth dimension as channels).
        One dask chunk per displayed slice. Scale in mm from the voxel sizes (``t`` gets 1.0;
        the repetition time is in ``metadata["zooms"]``). ``translate`` puts the first voxel
        at its scanner position in the display frame.

    Raises
    ------
    ReaderError
        If the header is bad, the voxel data is truncated or of an unsupported type.
    """
    path = Path(path)
    img, warnings = _load(path)
    header = img.header
    shape = tuple(int(n) for n in header.get_data_shape())
    if not 2 <= len(shape) <= 5:
        raise ReaderError(path, f"unsupported NIfTI with {len(shape)} dimensions {shape}")
    if header.get_data_dtype().fields is not None:
        raise ReaderError(path, "RGB/structured NIfTI voxels are not supported")
    _check_size(path, img, shape)
    affine = np.asarray(img.affine, dtype=float)
    start = io_orientation(affine)
    if np.isnan(start).any():
        raise ReaderError(path, f"degenerate affine (an axis has no direction): {affine.tolist()}")
    transform = ornt_transform(start, axcodes2ornt(DISPLAY_AXCODES))
    array = _display_array(path, img, shape, transform)
    zooms = [float(z) for z in header.get_zooms()]
    unit, unit_name = _spatial_unit(header)
    spatial_zooms = [*zooms[:3], *[1.0] * (3 - len(zooms[:3]))]
    scale = tuple(spatial_zooms[i] * unit for i in np.argsort(transform[:, 0]))
    translate = _display_origin(affine, shape, transform) * unit
    extra = "t" if len(shape) >= 4 else ""
    axes = extra + "zyx" + ("c" if len(shape) == 5 else "")
    return LazyImage(
        levels=[array],
        axes=axes,
        scale=(1.0,) * len(extra) + scale,
        unit="mm",
        name=_stem(path),
        modality="MR",
        source=str(path),
        translate=(0.0,) * len(extra) + tuple(float(t) for t in translate),
        metadata=_metadata(img, affine, shape, zooms, unit_name),
        warnings=warnings + _orientation_warnings(img, affine),
        display={"channel_axis": 4, "colormap": "gray"} if len(shape) == 5 else {},
    )


def _load(path: Path) -> tuple[nib.Nifti1Image, list[str]]:
    """Open the header (no voxel data), with nibabel's header fixes as warnings."""
    if not path.is_file():
        raise ReaderError(path, "no such file")
    # A .nii.gz stream can only be read forwards: keeping it open makes slices read in
    # ascending order cost one pass over the file instead of one pass each.
    keep_open = path.name.lower().endswith(".gz")
    with captured_log("nibabel") as fixes:
        try:
            img = nib.load(path, keep_file_open=keep_open)
        except (*_NIFTI_ERRORS, nib.spatialimages.HeaderDataError) as exc:
            raise ReaderError(path, f"not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReaderError(path, f"not a NIfTI file (nibabel reads it as {type(img).__name__})")
    return img, [f"header fixed by nibabel: {fix}" for fix in fixes]


def _check_size(path: Path, img: nib.Nifti1Image, shape: tuple[int, ...]) -> None:
    """An uncompressed file must hold all the voxels its header announces."""
    if path.name.lower().endswith(".gz"):
        return  # checked when a slice is decoded
    need = int(img.dataobj.offset) + int(np.prod(shape)) * img.get_data_dtype().itemsize
    have = path.stat().st_size
    if have < need:
        raise ReaderError(path, f"truncated NIfTI: header announces {need} bytes, file has {have}")


class _ProxySlices:
    """Array-like over a nibabel ArrayProxy that names the file when decoding fails."""

    def __init__(self, path: Path, proxy: Any, dtype: np.dtype) -> None:
        self._path = path
        self._proxy = proxy
        self.shape = tuple(proxy.shape)
        self.dtype = dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._proxy[key]).astype(self.dtype, copy=False)
        except _NIFTI_ERRORS as exc:
            raise ReaderError(self._path, f"cannot read NIfTI voxel data ({exc})") from exc


def _display_array(
    path: Path, img: nib.Nifti1Image, shape: tuple[int, ...], transform: np.ndarray
) -> da.Array:
    """The voxel data as dask, one chunk per displayed slice, flipped and transposed."""
    proxy = img.dataobj
    dtype = _scaled_dtype(path, proxy, len(shape))
    order = [int(i) for i in np.argsort(transform[:, 0])]  # display axis d <- file axis order[d]
    chunks = tuple(1 if i in (order[0], 3) else n for i, n in enumerate(shape))
    stat = path.stat()
    array = da.from_array(
        _ProxySlices(path, proxy, dtype),
        chunks=chunks,
        name="nifti-" + tokenize(str(path.resolve()), stat.st_mtime_ns, stat.st_size),
        meta=np.empty((0,) * len(shape), dtype),
    )
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    for axis, flip in enumerate(transform[:, 1]):
        if flip < 0:
            array = da.flip(array, axis=axis)
    if array.ndim >= 4:  # the 4th dimension (time) first, the 5th (channels) last
        order = [3, *order, *range(4, array.ndim)]
    return array.transpose(order)


def _scaled_dtype(path: Path, proxy: Any, ndim: int) -> np.dtype:
    """The dtype slices come out as, after scl_slope/scl_inter (read from one voxel)."""
    try:
        return np.asarray(proxy[(slice(0, 1),) * ndim]).dtype
    except _NIFTI_ERRORS as exc:
        raise ReaderError(path, f"cannot read NIfTI voxel data ({exc})") from exc


def _spatial_unit(header: Any) -> tuple[float, str]:
    """Millimetres per header spatial unit, and the unit as written in the metadata."""
    xyz_unit = header.get_xyzt_units()[0]
    if xyz_unit in _MM_PER_NIFTI_UNIT:
        return _MM_PER_NIFTI_UNIT[xyz_unit], xyz_unit
    return 1.0, f"{xyz_unit} (assumed mm)"


def _display_origin(
    affine: np.ndarray, shape: tuple[int, ...], transform: np.ndarray
) -> np.ndarray:
    """Scanner position of display voxel (0, 0, 0) along the display axes (S, P, L)."""
    first = [
        shape[i] - 1 if i < len(shape) and flip < 0 else 0 for i, flip in enumerate(transform[:, 1])
    ]
    ras = affine @ np.array([*first, 1.0])
    return np.array([ras[2], -ras[1], -ras[0]])


def _orientation_warnings(img: nib.Nifti1Image, affine: np.ndarray) -> list[str]:
    """Warnings about a missing or oblique orientation."""
    header = img.header
    warnings = []
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        warnings.append(
            "orientation unknown: qform and sform codes are 0; the voxel axes are shown "
            f"as nibabel's default orientation {''.join(_axcodes(affine))}"
        )
    angle = float(np.degrees(np.max(obliquity(affine))))
    if angle > _OBLIQUE_DEGREES:
        warnings.append(
            f"oblique volume ({angle:.1f} deg off the scanner axes): shown in the nearest "
            "axis-aligned orientation, not resampled"
        )
    return warnings


def _axcodes(affine: np.ndarray) -> list[str]:
    """Direction of each voxel axis (``"R"``, ``"A"``, ...; ``"?"`` if degenerate)."""
    return [c or "?" for c in aff2axcodes(affine)]


def _metadata(
    img: nib.Nifti1Image,
    affine: np.ndarray,
    shape: tuple[int, ...],
    zooms: list[float],
    unit_name: str,
) -> dict[str, Any]:
    """JSON-friendly facts from the header."""
    header = img.header
    slope, inter = header.get_slope_inter()
    return {
        "format": "nifti2" if isinstance(img, nib.Nifti2Image) else "nifti1",
        "affine": affine.tolist(),
        "orientation": "".join(_axcodes(affine)),
        "display_orientation": "".join(DISPLAY_AXCODES),
        "original_shape": list(shape),
        "dtype": str(header.get_data_dtype()),
        "zooms": zooms,
        "xyz_unit": unit_name,
        "time_unit": header.get_xyzt_units()[1],
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "scl_slope": None if slope is None else float(slope),
        "scl_inter": None if inter is None else float(inter),
        "description": header["descrip"].item().decode("latin-1").strip("\x00 "),
    }


def _stem(path: Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem
