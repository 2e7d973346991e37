"""Multiscale OME-Zarr (NGFF 0.4, zarr format 2) for whole-slide results.

Batch prediction writes a slide's labels and probabilities here: a pyramid that napari (and
QuPath, via its OME-Zarr support) opens lazily, written level by level from dask arrays without
materialising them, into a temporary folder that replaces the target only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.io._atomic import atomic_directory
from napari_neuroseg.io.writers import WriterError, _halve_mean, _halve_nearest, _pyramid

NGFF_VERSION = "0.4"
_UNITS = {"um": "micrometer", "µm": "micrometer", "mm": "millimeter", "nm": "nanometer"}


def _axes_metadata(axes: str, unit: str | None) -> list[dict[str, str]]:
    out = []
    for name in axes:
        if name == "c":
            out.append({"name": "c", "type": "channel"})
        else:
            entry = {"name": name, "type": "space"}
            if unit:
                entry["unit"] = _UNITS.get(unit, unit)
            out.append(entry)
    return out


def write_ome_zarr(
    path: str | os.PathLike[str],
    data: da.Array | np.ndarray,
    *,
    axes: str = "yx",
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    unit: str | None = None,
    kind: str = "image",
    channel_names: Sequence[str] | None = None,
    chunks: int = 256,
    name: str | None = None,
) -> Path:
    """Write ``data`` and its downsampled levels as a multiscale OME-Zarr, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.zarr`` folder to write (replaced if it exists).
    data : dask or numpy array
        Full-resolution data with axes ``axes`` (``"yx"`` or ``"cyx"``).
    axes : str
        ``"yx"`` or ``"cyx"``.
    scale, translate : sequence of float, optional
        Physical pixel size and origin of level 0 along the spatial axes (y, x).
    unit : str, optional
        ``"um"`` or ``"mm"``.
    kind : {"image", "labels"}
        Labels are downsampled by taking every second pixel (ids stay ids); images by 2x2 means.
    channel_names : sequence of str, optional
        Names of the ``c`` axis entries (stored as omero channel labels).
    chunks : int
        Chunk edge along y and x.
    name : str, optional
        Stored in the multiscales metadata.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    WriterError
        For axes other than ``"yx"``/``"cyx"`` or a data shape that does not match them.
    """
    target = Path(path)
    if axes not in ("yx", "cyx"):
        raise WriterError(target, f"OME-Zarr axes must be 'yx' or 'cyx', not {axes!r}")
    array = da.asarray(data)
    if array.ndim != len(axes):
        raise WriterError(target, f"data has {array.ndim} dimensions but axes are {axes!r}")
    if kind not in ("image", "labels"):
        raise WriterError(target, f"kind must be 'image' or 'labels', not {kind!r}")
    halve = _halve_nearest if kind == "labels" else _halve_mean
    levels = _pyramid(array, halve)
    spatial = tuple(float(s) for s in (scale or (1.0, 1.0)))
    origin = tuple(float(t) for t in (translate or (0.0, 0.0)))
    lead = (1.0,) * (len(axes) - 2)
    datasets = []
    with atomic_directory(target) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        for i, level in enumerate(levels):
            factor = 2**i
            level_chunks = (*level.shape[:-2], chunks, chunks)
            arr = root.create_array(
                str(i), shape=level.shape, chunks=level_chunks, dtype=level.dtype, fill_value=0
            )
            da.store(level.rechunk(level_chunks), arr, lock=False)
            transforms = [{"type": "scale", "scale": [*lead, *(s * factor for s in spatial)]}]
            # a level-i pixel centre sits (factor - 1) / 2 level-0 pixels from level 0's
            shift = [o + s * (factor - 1) / 2 for o, s in zip(origin, spatial, strict=True)]
            transforms.append({"type": "translation", "translation": [*(0.0,) * len(lead), *shift]})
            datasets.append({"path": str(i), "coordinateTransformations": transforms})
        attrs = {
            "multiscales": [
                {
                    "version": NGFF_VERSION,
                    "name": name or target.stem,
                    "axes": _axes_metadata(axes, unit),
                    "datasets": datasets,
                    "type": "mean" if kind == "image" else "nearest",
                }
            ]
        }
        if channel_names is not None:
            attrs["omero"] = {"channels": [{"label": str(c)} for c in channel_names]}
        if kind == "labels":
            attrs["image-label"] = {"version": NGFF_VERSION}
        root.attrs.update(attrs)
    return target


def read_ome_zarr(path: str | os.PathLike[str]) -> tuple[list[da.Array], dict]:
    """Open a multiscale OME-Zarr written by :func:`write_ome_zarr` lazily.

    Returns
    -------
    levels : list of dask.array.Array
    attrs : dict
        The group's attributes (``multiscales``, ``omero``, ...).
    """
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    paths = [d["path"] for d in attrs["multiscales"][0]["datasets"]]
    return [da.from_zarr(root[p]) for p in paths], attrs
