"""Write label masks and probability maps as TIFF, OME-TIFF (optionally pyramidal) or PNG.

Every writer streams from dask block by block (TIFF pages or 256x256 tiles), never holding
the whole array, and writes atomically (see :mod:`napari_neuroseg.io._atomic`): a failure
midway leaves nothing at the target path. The format follows the file name: ``.ome.tif`` /
``.ome.tiff``, ``.tif`` / ``.tiff`` or ``.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ._tiff_plan import WritePlan
from ._write_common import WriterError, fitting_int_type, halve_mean, halve_nearest

__all__ = ["WriterError", "write_labels", "write_probabilities"]

_OME_LABEL_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32")
_PNG_TYPES = ("uint8", "uint16")


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
    plan = WritePlan(path, fmt, axes, scale, unit, "labels", metadata, None)
    return plan.run(_label_levels(path, levels, fmt), pyramid, halve_nearest, _same)


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
    plan = WritePlan(path, fmt, axes, scale, unit, "probabilities", metadata, names)
    levels = [_unit_interval(path, level) for level in levels]
    return plan.run(levels, pyramid, halve_mean, _to_uint8 if dtype == "uint8" else _same)


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
    name = fitting_int_type(low, high, allowed)
    if name is not None:
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


