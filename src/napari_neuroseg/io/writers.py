"""Write label masks and probability maps as TIFF, OME-TIFF (optionally pyramidal) or PNG.

Every writer streams from dask block by block (TIFF pages or 256x256 tiles), never holding
the whole array, and writes atomically (see :mod:`napari_neuroseg.io._atomic`): a failure
midway leaves nothing at the target path. The format follows the file name: ``.ome.tif`` /
``.ome.tiff``, ``.tif`` / ``.tiff`` or ``.png``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask
import dask.array as da
import imagecodecs
import numpy as np
import tifffile

from ._atomic import atomic_path
from .downsample import downsample
from .mri import mm_per_unit

__all__ = ["WriterError", "write_labels", "write_probabilities"]

TILE = 256  #: tile edge of tiled TIFF pages
TILE_ABOVE = 1024  #: planes with a side longer than this are tiled
_BAND_BYTES = 64 * 2**20  # rows of tiles computed together, at most about this many bytes
_BIGTIFF_BYTES = 2**32 - 2**28
_OME_LABEL_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32")
_PNG_TYPES = ("uint8", "uint16")
_OME_UNITS = MappingProxyType(
    {1.0: "mm", 1e-3: "µm", 1e-6: "nm", 10.0: "cm", 1000.0: "m", 25.4: "in"}
)


class WriterError(ValueError):
    """Data that cannot be written to the requested file; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def write_labels(
    path: str | os.PathLike[str],
    data: Any,
    *,
    scale: Sequence[float] | None = None,
    unit: str | None = None,
    pyramid: bool = False,
    metadata: dict[str, Any] | None = None,
    axes: str | None = None,
) -> list[str]:
    """Write a label image (integer ids) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file: ``.tif``/``.tiff``, ``.ome.tif``/``.ome.tiff`` or ``.png`` (2D only).
    data : array-like, dask array, or list of them
        The labels; a list is a multiscale pyramid, full resolution first.
    scale : sequence of float, optional
        Pixel size along the spatial axes (or along every axis, as napari gives it).
    unit : str, optional
        Unit of ``scale`` (``"mm"``, ``"um"``, ...). Without one the scale is stored as a
        unitless ratio.
    pyramid : bool
        Write reduced levels as SubIFDs (nearest-neighbour, halving until 256 px fit).
        Implied when ``data`` is a list of levels.
    metadata : dict, optional
        JSON-friendly facts stored in the TIFF description.
    axes : str, optional
        Axis letters of ``data`` (``"yx"``, ``"zyx"``, ``"tzyx"``); by default ``"yx"`` or
        ``"zyx"``.

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    WriterError
        Float labels, labels that do not fit the format's integer types, a 3D PNG, bad
        ``scale`` or ``axes``. Nothing is written then.
    """
    path = Path(path)
    fmt = _format(path)
    levels = _as_levels(path, data)
    axes = _axes(path, levels[0].ndim, axes, {2: "yx", 3: "zyx"}, "tzyx")
    plan = _Plan(path, fmt, axes, scale, unit, "labels", metadata, None)
    return plan.run(_label_levels(path, levels, fmt), pyramid, _halve_nearest, _same)


def write_probabilities(
    path: str | os.PathLike[str],
    data: Any,
    *,
    scale: Sequence[float] | None = None,
    unit: str | None = None,
    pyramid: bool = False,
    channel_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    dtype: str = "float32",
    axes: str | None = None,
) -> list[str]:
    """Write probabilities in [0, 1] atomically, as float32 or as uint8 (0-255).

    Parameters
    ----------
    path : str or os.PathLike
        Target file: ``.tif``/``.tiff``, ``.ome.tif``/``.ome.tiff`` or ``.png`` (2D uint8).
    data : array-like, dask array, or list of them
        Floats (clipped to [0, 1]), or uint8 read as 0-255. A list is a pyramid.
    scale, unit, pyramid, metadata
        As in :func:`write_labels`; reduced levels are 2x2 means.
    channel_names : sequence of str, optional
        One name per class along the ``c`` axis (OME Channel names).
    dtype : {"float32", "uint8"}
        Stored type; uint8 stores ``round(255 * p)``.
    axes : str, optional
        By default ``"yx"``, ``"cyx"`` (3D: classes first) or ``"czyx"``.

    Returns
    -------
    list of str
        The written path.

    Raises
    ------
    WriterError
        Integer data other than uint8, a float PNG, mismatched ``channel_names``, bad
        ``scale`` or ``axes``.
    """
    path = Path(path)
    fmt = _format(path)
    if dtype not in ("float32", "uint8"):
        raise WriterError(path, f"dtype must be 'float32' or 'uint8', not {dtype!r}")
    if fmt == "png" and dtype != "uint8":
        raise WriterError(path, "PNG cannot hold float32 probabilities: use dtype='uint8'")
    levels = _as_levels(path, data)
    axes = _axes(path, levels[0].ndim, axes, {2: "yx", 3: "cyx", 4: "czyx"}, "ctzyx")
    names = list(channel_names) if channel_names is not None else None
    if names is not None and ("c" not in axes or len(names) != levels[0].shape[axes.index("c")]):
        raise WriterError(path, f"{len(names)} channel names for axes {axes!r} {levels[0].shape}")
    plan = _Plan(path, fmt, axes, scale, unit, "probabilities", metadata, names)
    levels = [_unit_interval(path, level) for level in levels]
    return plan.run(levels, pyramid, _halve_mean, _to_uint8 if dtype == "uint8" else _same)


def _same(array: da.Array) -> da.Array:
    """Store as is."""
    return array


def _to_uint8(array: da.Array) -> da.Array:
    """Probabilities in [0, 1] to 0-255."""
    return da.round(da.nan_to_num(array) * 255).astype(np.uint8)


def _format(path: Path) -> str:
    """``"ome"``, ``"tiff"`` or ``"png"`` from the file name."""
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".png"):
        return "png"
    raise WriterError(path, "unsupported file type: use .tif, .ome.tif or .png")


def _as_levels(path: Path, data: Any) -> list[da.Array]:
    """A list of dask arrays (a multiscale list, or one array), without copying.

    Any sequence of arrays (a list, napari's ``MultiScaleData``) is a pyramid; a nested
    list of numbers is one array.
    """
    is_levels = isinstance(data, Sequence) and len(data) > 0 and np.ndim(data[0]) >= 2
    items = list(data) if is_levels else [data]
    if not items:
        raise WriterError(path, "no data to write")
    levels = [x if isinstance(x, da.Array) else da.asarray(x) for x in items]
    first = levels[0]
    for level in levels[1:]:
        if level.shape[:-2] != first.shape[:-2] or level.dtype != first.dtype:
            raise WriterError(
                path,
                f"pyramid level {level.shape} {level.dtype} does not match "
                f"level 0 {first.shape} {first.dtype}",
            )
    if first.ndim < 2 or 0 in first.shape:
        raise WriterError(path, f"cannot write an array of shape {first.shape}")
    return levels


def _axes(path: Path, ndim: int, axes: str | None, default: dict[int, str], allowed: str) -> str:
    """Validated axis letters (ending in ``yx``)."""
    axes = axes.lower() if axes else default.get(ndim)
    if axes is None:
        raise WriterError(path, f"a {ndim}-d array needs axes= (letters of {allowed!r})")
    if (
        len(axes) != ndim
        or not axes.endswith("yx")
        or len(set(axes)) != len(axes)
        or not set(axes) <= set(allowed)
    ):
        raise WriterError(path, f"axes {axes!r} do not fit a {ndim}-d array (letters {allowed!r})")
    return axes


def _label_levels(path: Path, levels: list[da.Array], fmt: str) -> list[da.Array]:
    """Integer labels in a type the format holds (narrowed only where it must be)."""
    dtype = levels[0].dtype
    if dtype.kind == "b":
        return [level.astype(np.uint8) for level in levels]
    if dtype.kind not in "iu":
        raise WriterError(path, f"labels must be integers, not {dtype}")
    allowed = {"png": _PNG_TYPES, "ome": _OME_LABEL_TYPES}.get(fmt)
    if allowed is None or dtype.name in allowed:
        return levels
    low, high = (int(v) for v in dask.compute(levels[0].min(), levels[0].max()))
    for name in allowed:
        info = np.iinfo(name)
        if info.min <= low and high <= info.max:
            return [level.astype(name) for level in levels]
    raise WriterError(path, f"label values {low}..{high} do not fit {fmt.upper()} ({allowed})")


def _unit_interval(path: Path, level: da.Array) -> da.Array:
    """float32 probabilities clipped to [0, 1] (uint8 input is read as 0-255)."""
    if level.dtype == np.uint8:
        return level.astype(np.float32) / np.float32(255)
    if level.dtype.kind == "b":
        return level.astype(np.float32)
    if level.dtype.kind != "f":
        raise WriterError(path, f"probabilities must be floats in [0, 1], not {level.dtype}")
    return da.clip(level.astype(np.float32), 0, 1)


def _halve_nearest(level: da.Array) -> da.Array:
    """Every second row and column (labels stay labels)."""
    return level[..., ::2, ::2]


def _halve_mean(level: da.Array) -> da.Array:
    """2x2 means (an odd last row/column is averaged with itself)."""
    return downsample(level, axes=(-2, -1), odd="edge")


def _pyramid(level0: da.Array, halve: Callable[[da.Array], da.Array]) -> list[da.Array]:
    """Level 0 and halvings of it until the plane fits in one tile."""
    levels = [level0]
    while max(levels[-1].shape[-2:]) > TILE:
        levels.append(halve(levels[-1]))
    return levels


class _Plan:
    """Where and how to write: format, axes, physical scale and description metadata."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        axes: str,
        scale: Sequence[float] | None,
        unit: str | None,
        kind: str,
        metadata: dict[str, Any] | None,
        channel_names: list[str] | None,
    ) -> None:
        if fmt == "png" and axes != "yx":
            raise WriterError(path, f"PNG holds 2D masks only, not {axes!r}: use .tif or .ome.tif")
        if unit is not None and mm_per_unit(unit) is None:
            raise WriterError(path, f"unknown unit {unit!r} (use 'mm', 'um', 'nm', 'cm' or 'm')")
        self.path, self.fmt, self.axes, self.unit, self.kind = path, fmt, axes, unit, kind
        self.scale = _spatial_scale(path, axes, scale)
        self.metadata = json.loads(json.dumps(metadata or {}, default=str))
        self.channel_names = channel_names
        # Probabilities are noisy floats: zlib level 1 is ~2x faster there for ~same size.
        self._zlib_args = {"level": 1} if kind == "probabilities" else None

    def run(
        self,
        levels: list[da.Array],
        pyramid: bool,
        halve: Callable[[da.Array], da.Array],
        finish: Callable[[da.Array], da.Array],
    ) -> list[str]:
        """Build the pyramid if asked, convert to the stored type and write atomically."""
        if self.fmt == "png":
            if pyramid or len(levels) > 1:
                raise WriterError(self.path, "PNG stores one level: write a pyramid to .ome.tif")
            self._write_png(finish(levels[0]))
        else:
            if pyramid and len(levels) == 1:
                levels = _pyramid(levels[0], halve)
            self._write_tiff([finish(level) for level in levels])
        return [str(self.path)]

    def _write_png(self, array: da.Array) -> None:
        if self.scale and any(v != 1 for v in self.scale.values()):
            warnings.warn(
                f"{self.path}: PNG stores no pixel size; the scale is not written",
                UserWarning,
                stacklevel=4,
            )
        encoded = imagecodecs.png_encode(np.ascontiguousarray(array.compute()))
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(encoded)

    def _write_tiff(self, levels: list[da.Array]) -> None:
        tile = (TILE, TILE) if max(levels[0].shape[-2:]) > TILE_ABOVE else None
        bigtiff = sum(level.nbytes for level in levels) > _BIGTIFF_BYTES
        with (
            atomic_path(self.path) as tmp,
            tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=self.fmt == "ome") as tif,
        ):
            for i, level in enumerate(levels):
                factor = (
                    levels[0].shape[-2] / level.shape[-2],
                    levels[0].shape[-1] / level.shape[-1],
                )
                extra = (
                    {"subifds": len(levels) - 1, "metadata": self._description()}
                    if i == 0
                    else {"subfiletype": 1, "metadata": self._reduced_description()}
                )
                tif.write(
                    _tiff_chunks(level, tile),
                    shape=level.shape,
                    dtype=level.dtype,
                    photometric="minisblack",
                    compression="zlib",
                    compressionargs=self._zlib_args,
                    tile=tile,
                    **self._resolution(factor),
                    **extra,
                )

    def _resolution(self, factor: tuple[float, float]) -> dict[str, Any]:
        """TIFF resolution tags (pixels per cm, or per unitless ratio) for a level."""
        if self.scale is None:
            return {}
        size_y, size_x = self.scale["y"] * factor[0], self.scale["x"] * factor[1]
        if self.unit is None:
            return {"resolution": (1 / size_x, 1 / size_y), "resolutionunit": "NONE"}
        cm = mm_per_unit(self.unit) / 10
        return {
            "resolution": (1 / (size_x * cm), 1 / (size_y * cm)),
            "resolutionunit": "CENTIMETER",
        }

    def _reduced_description(self) -> dict[str, Any] | None:
        """Reduced levels: tifffile's shaped series needs a description on each SubIFD."""
        return {"axes": self.axes.upper()} if self.fmt == "tiff" else None

    def _description(self) -> dict[str, Any]:
        """tifffile metadata: JSON description (TIFF) or OME-XML attributes (OME-TIFF)."""
        facts = {"kind": self.kind, "metadata": self.metadata}
        if self.fmt == "tiff":
            z = self.scale.get("z") if self.scale else None
            out = {
                "axes": self.axes.upper(),
                **facts,
                "spacing": z,
                "unit": self.unit,
                "channel_names": self.channel_names,
            }
            return {k: v for k, v in out.items() if v is not None}
        out: dict[str, Any] = {"axes": self.axes.upper()}
        if isinstance(self.metadata.get("name"), str):
            out["Name"] = self.metadata["name"]
        if self.scale and self.unit is not None:
            symbol = _OME_UNITS.get(mm_per_unit(self.unit), "mm")
            factor = mm_per_unit(self.unit) / mm_per_unit(symbol)
            for axis in set(self.scale) & set("zyx"):
                out[f"PhysicalSize{axis.upper()}"] = self.scale[axis] * factor
                out[f"PhysicalSize{axis.upper()}Unit"] = symbol
        elif self.scale:
            facts["unitless_scale"] = self.scale
        if self.channel_names:
            out["Channel"] = {"Name": self.channel_names}
        out["Description"] = json.dumps(facts)
        return out


def _spatial_scale(path: Path, axes: str, scale: Sequence[float] | None) -> dict[str, float] | None:
    """Pixel size per spatial axis letter; accepts one value per axis including ``c``."""
    if scale is None:
        return None
    values = [float(v) for v in scale]
    spatial = axes.replace("c", "")
    if len(values) == len(axes) != len(spatial):
        values = [v for v, a in zip(values, axes, strict=True) if a != "c"]
    if len(values) != len(spatial) or not all(math.isfinite(v) and v > 0 for v in values):
        raise WriterError(path, f"scale {tuple(scale)} does not fit axes {axes!r}")
    return dict(zip(spatial, values, strict=True))


def _tiff_chunks(level: da.Array, tile: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Pages (untiled) or tiles in file order, computing a band of tile rows at a time."""
    height, width = level.shape[-2:]
    if tile is None:
        for index in np.ndindex(*level.shape[:-2]):
            yield np.asarray(level[index].compute())
        return
    row_bytes = tile[0] * width * level.dtype.itemsize
    chunk_rows = max(level.chunks[-2])
    band = tile[0] * max(1, min(math.ceil(chunk_rows / tile[0]), _BAND_BYTES // row_bytes))
    for index in np.ndindex(*level.shape[:-2]):
        plane = level[index]
        for y0 in range(0, height, band):
            rows = np.asarray(plane[y0 : y0 + band].compute())
            for ty in range(0, rows.shape[0], tile[0]):
                for x0 in range(0, width, tile[1]):
                    yield rows[ty : ty + tile[0], x0 : x0 + tile[1]]
