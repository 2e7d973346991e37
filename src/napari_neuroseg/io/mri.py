"""MRI readers: multi-page TIFF stacks, NIfTI volumes and Kaggle LGG slice folders.

DICOM MR series are read by :mod:`napari_neuroseg.io.dicom`. Every reader here returns
:class:`~napari_neuroseg.io._types.LazyImage` records whose single level is a dask array
with one chunk per slice: nothing is decoded until napari (or the caller) asks for a slice.

The NIfTI reader lives in :mod:`napari_neuroseg.io._nifti` and the LGG reader in
:mod:`napari_neuroseg.io._lgg`; this module re-exports them.
"""

from __future__ import annotations

import logging
import os
import struct
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr
from dask.base import tokenize

from ._lgg import is_lgg_folder, is_lgg_slice, read_lgg_folder
from ._logcapture import captured_log
from ._nifti import is_nifti, read_nifti
from ._types import LazyImage, ReaderError

__all__ = [
    "is_lgg_folder",
    "is_lgg_slice",
    "is_nifti",
    "mm_per_unit",
    "read_lgg_folder",
    "read_nifti",
    "read_tiff_stack",
]

#: Millimetres per unit, for the unit names found in ImageJ, OME and tifffile metadata.
MM_PER_UNIT = MappingProxyType(
    {
        "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
        "cm": 10.0, "centimeter": 10.0, "centimetre": 10.0,
        "m": 1000.0, "meter": 1000.0, "metre": 1000.0,
        "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "\\u00b5m": 1e-3, "micron": 1e-3,
        "microns": 1e-3, "micrometer": 1e-3, "micrometre": 1e-3,
        "nm": 1e-6, "nanometer": 1e-6, "nanometre": 1e-6,
        "inch": 25.4, "in": 25.4,
    }
)  # fmt: skip

_TIFF_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, RuntimeError, struct.error)
_RESOLUTION_UNIT_MM = MappingProxyType({2: 25.4, 3: 10.0})  # TIFF ResolutionUnit: inch, cm
_DEFAULT_RESOLUTIONS = (1.0, 72.0, 96.0)


@dataclass
class _Spacing:
    """Voxel size in mm along y, x and z (None where unknown) and where it came from."""

    y: float | None = None
    x: float | None = None
    z: float | None = None
    source: str = "unknown"
    channel_names: list[str] = field(default_factory=list)


def mm_per_unit(unit: object) -> float | None:
    """Millimetres in one ``unit`` (``"micron"``, ``"µm"``, ``"cm"``, ...), or None if unknown.

    Parameters
    ----------
    unit : object
        A unit name as found in file metadata; anything else gives None.

    Returns
    -------
    float or None
    """
    if not isinstance(unit, str):
        return None
    return MM_PER_UNIT.get(unit.strip().lower())


def read_tiff_stack(path: str | os.PathLike[str]) -> LazyImage:
    """Read a (multi-page) TIFF as a lazy MR volume.

    Pages become slices (axis ``z``); a channel axis (``C``, or RGB samples) is moved last.
    A single 2D page stays 2D (axes ``"yx"``): a one-slice volume would need a slice spacing
    that does not exist. The voxel size (mm) comes from OME-XML, ImageJ metadata
    (``spacing``, ``unit``), tifffile's JSON description (``spacing``, ``unit``) or the
    resolution tags, in that order; where none is found the size is 1.0 and a
    ``"voxel size unknown"`` warning says so. Of a pyramidal file only level 0 is read.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif``/``.tiff``/``.ome.tif`` file.

    Returns
    -------
    LazyImage
        Axes ``"zyx"``, ``"zyxc"``, ``"tzyx"``, ``"yx"`` or ``"yxc"``; one dask chunk per
        page (a slice, or a channel of a slice); ``unit="mm"``, ``modality="MR"``.

    Raises
    ------
    ReaderError
        If the file is not a readable TIFF, is truncated, or has an unsupported axis layout.
    """
    path = Path(path)
    with captured_log("tifffile", logging.ERROR) as logged:
        try:
            with tifffile.TiffFile(path) as tif:
                info = _inspect(path, tif)
        except ReaderError:
            raise
        except _TIFF_ERRORS as exc:
            raise ReaderError(path, f"not a readable TIFF file ({exc})") from exc
    if logged:
        raise ReaderError(path, f"truncated or corrupted TIFF ({logged[0]})")
    array = _lazy_planes(path, info)
    return _to_lazy_image(path, info, array)


@dataclass
class _TiffInfo:
    """What :func:`read_tiff_stack` needs to know about a file, read from its header."""

    shape: tuple[int, ...]
    dtype: np.dtype
    tiff_axes: str
    axes: str  # our letters, in file order
    rgb: bool
    spacing: _Spacing
    n_levels: int


def _inspect(path: Path, tif: tifffile.TiffFile) -> _TiffInfo:
    """Read and check the header of an open TIFF (no pixel data is decoded)."""
    if not tif.series:
        raise ReaderError(path, "the TIFF file contains no image")
    series = tif.series[0]
    _check_complete(path, tif, series)
    axes = _map_axes(path, series.axes)
    keyframe = series.keyframe
    return _TiffInfo(
        shape=tuple(series.shape),
        dtype=np.dtype(series.dtype),
        tiff_axes=series.axes,
        axes=axes,
        rgb="S" in series.axes and keyframe.photometric == tifffile.PHOTOMETRIC.RGB,
        spacing=_read_spacing(tif, keyframe),
        n_levels=len(series.levels),
    )


def _check_complete(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> None:
    """Raise ReaderError when the header promises more data than the file holds."""
    size = os.path.getsize(path)
    ij = tif.imagej_metadata or {}
    planes = int(np.prod(series.shape)) // max(1, _plane_size(series))
    if "images" in ij and planes < int(ij["images"]):
        raise ReaderError(
            path, f"truncated TIFF: ImageJ header announces {ij['images']} images, found {planes}"
        )
    shaped = tif.shaped_metadata
    announced = shaped[0].get("shape") if shaped else None
    if announced is not None and int(np.prod(announced)) != int(np.prod(series.shape)):
        raise ReaderError(
            path,
            f"truncated TIFF: header announces shape {tuple(shaped[0]['shape'])}, "
            f"found {tuple(series.shape)}",
        )
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        last = series.pages[len(series.pages) - 1]
        pairs = zip(
            getattr(last, "dataoffsets", ()), getattr(last, "databytecounts", ()), strict=False
        )
        end = max((o + c for o, c in pairs), default=0)
    if end > size:
        raise ReaderError(path, f"truncated TIFF: pixel data ends at byte {end}, file has {size}")


def _plane_size(series: tifffile.TiffPageSeries) -> int:
    """Number of values in one page of ``series``."""
    keep = [n for n, a in zip(series.shape, series.axes, strict=True) if a in "YXS"]
    return int(np.prod(keep)) if keep else 1


def _map_axes(path: Path, tiff_axes: str) -> str:
    """Translate tifffile axis codes to ours (``z``, ``t``, ``y``, ``x``, ``c``).

    ``Z`` and ``T`` keep their meaning; any other stack axis (``I`` image sequence, ``Q``
    unknown, ...) becomes ``z``, or ``t`` when ``z`` is taken. ``C`` and ``S`` become ``c``.
    """
    if sum(a in "CS" for a in tiff_axes) > 1:
        raise ReaderError(path, f"unsupported axes {tiff_axes!r}: both channels and samples")
    free = [a for a in "zt" if a.upper() not in tiff_axes]
    out = []
    for letter in tiff_axes:
        if letter in "YXZT":
            out.append(letter.lower())
        elif letter in "CS":
            out.append("c")
        elif free:
            out.append(free.pop(0))
        else:
            raise ReaderError(path, f"unsupported axes {tiff_axes!r}: too many stack axes")
    spatial = "".join(out).replace("c", "")
    if not spatial.endswith("yx"):
        raise ReaderError(path, f"unsupported axes {tiff_axes!r}")
    return "".join(out)


def _read_spacing(tif: tifffile.TiffFile, page: Any) -> _Spacing:
    """Voxel size in mm from OME, ImageJ, tifffile metadata or resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        spacing = _ome_spacing(tif.ome_metadata)
        if spacing.source != "unknown":
            return spacing
    if tif.imagej_metadata is not None:
        described, source = tif.imagej_metadata, "imagej"
    elif tif.shaped_metadata:
        described, source = tif.shaped_metadata[0], "tifffile"
    else:
        described, source = {}, "resolution tags"
    unit_mm = mm_per_unit(described.get("unit"))
    z = described.get("spacing")
    z_mm = float(z) * unit_mm if isinstance(z, (int, float)) and z > 0 and unit_mm else None
    # Resolution tags count pixels per inch or cm; with ResolutionUnit NONE (ImageJ),
    # pixels per the unit named in the description.
    pixel_unit_mm = _RESOLUTION_UNIT_MM.get(int(page.resolutionunit), unit_mm)
    xres, yres = page.resolution
    # 1 pixel per unit and 72/96 dpi are what image libraries write when nobody measured.
    default = unit_mm is None and xres == yres and xres in _DEFAULT_RESOLUTIONS
    if pixel_unit_mm is None or default or not (xres > 0 and yres > 0):
        return _Spacing(z=z_mm, source=source if z_mm else "unknown")
    return _Spacing(y=pixel_unit_mm / yres, x=pixel_unit_mm / xres, z=z_mm, source=source)


def _ome_spacing(xml: str) -> _Spacing:
    """Physical sizes (mm) and channel names from the first OME Image."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return _Spacing()
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None:
        return _Spacing()
    sizes = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        factor = mm_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        sizes[axis] = float(value) * factor if value and factor else None
    names = [c.get("Name", "") for c in pixels if c.tag.endswith("}Channel")]
    found = any(v is not None for v in sizes.values())
    return _Spacing(
        y=sizes["Y"],
        x=sizes["X"],
        z=sizes["Z"],
        source="ome" if found else "unknown",
        channel_names=names if all(names) else [],
    )


class _TiffPlanes:
    """Array-like over a tifffile zarr store that names the file when decoding fails.

    The store keeps the file open; it is closed when this object is garbage collected
    (that is, when the last dask graph using it goes away).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        self._array = zarr.open(store, mode="r")
        weakref.finalize(self, store.close)
        self._path = path
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._array[key])
        except _TIFF_ERRORS as exc:
            raise ReaderError(self._path, f"cannot decode TIFF pixel data ({exc})") from exc


def _lazy_planes(path: Path, info: _TiffInfo) -> da.Array:
    """The pixels as dask, one chunk per page, with the channel axis moved last.

    A chunk is one slice, or one channel of a slice where channels are separate pages;
    interleaved RGB samples stay together.
    """
    try:
        planes = _TiffPlanes(path, info.shape, info.dtype)
    except _TIFF_ERRORS as exc:
        raise ReaderError(path, f"cannot open TIFF pixel data ({exc})") from exc
    chunks = tuple(n if a in "YXS" else 1 for n, a in zip(info.shape, info.tiff_axes, strict=True))
    stat = path.stat()
    name = "tiff-stack-" + tokenize(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    array = da.from_array(
        planes, chunks=chunks, name=name, meta=np.empty((0,) * len(info.shape), info.dtype)
    )
    if "c" in info.axes and info.axes[-1] != "c":
        order = [i for i, a in enumerate(info.axes) if a != "c"] + [info.axes.index("c")]
        array = array.transpose(order)
    return array


def _to_lazy_image(path: Path, info: _TiffInfo, array: da.Array) -> LazyImage:
    """Assemble the LazyImage: scale, warnings, display hints, metadata."""
    axes = info.axes.replace("c", "") + ("c" if "c" in info.axes else "")
    spacing = info.spacing
    warnings: list[str] = []
    if spacing.y is None or spacing.x is None:
        warnings.append("voxel size unknown: no pixel size in the TIFF metadata; using 1.0 mm")
    if "z" in axes and spacing.z is None:
        warnings.append("voxel size unknown along z: no slice spacing in the TIFF; using 1.0 mm")
    sizes = {"y": spacing.y, "x": spacing.x, "z": spacing.z, "t": 1.0}
    scale = tuple(float(sizes[a] or 1.0) for a in axes.replace("c", ""))
    name = _stem(path)
    return LazyImage(
        levels=[array],
        axes=axes,
        scale=scale,
        unit="mm",
        name=name,
        modality="MR",
        source=str(path),
        metadata={
            "format": "tiff",
            "tiff_axes": info.tiff_axes,
            "original_shape": list(info.shape),
            "dtype": str(info.dtype),
            "voxel_size_source": spacing.source,
            "voxel_size_mm": [sizes[a] for a in axes.replace("c", "")],
            "pyramid_levels_in_file": info.n_levels,
        },
        warnings=warnings,
        display=_channel_display(name, array.shape[-1], info, spacing) if "c" in axes else {},
    )


def _channel_display(name: str, n_channels: int, info: _TiffInfo, spacing: _Spacing) -> dict:
    """napari keywords that split a channel axis into one layer per channel."""
    names = spacing.channel_names if len(spacing.channel_names) == n_channels else None
    display: dict[str, Any] = {
        "channel_axis": len(info.axes) - 1,
        "name": [f"{name} {n}" for n in names or (f"ch{i}" for i in range(n_channels))],
    }
    if info.rgb and n_channels == 3:
        display.update(colormap=["red", "green", "blue"], blending="additive")
    else:
        display["colormap"] = "gray"
    return display


def _stem(path: Path) -> str:
    """File name without ``.tif``/``.tiff`` and ``.ome``."""
    name = path.name
    for ending in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem
