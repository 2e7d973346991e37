"""Multiscale OME-Zarr (NGFF 0.4, zarr format 2) for whole-slide results.

Batch prediction writes a slide's class probabilities here as a multiscale image with its
label image inside, where NGFF 0.4 puts labels::

    prediction.ome.zarr/          multiscales (c, y, x), omero channel names
        0/ 1/ 2/ ...              the pyramid levels
        labels/                   .zattrs {"labels": ["segmentation"]}
            segmentation/         multiscales (y, x) + image-label (colours, class names)
                0/ 1/ 2/ ...

napari (with napari-ome-zarr) opens the folder as the image plus a labels layer, lazily;
QuPath and other NGFF readers find the labels the same way. Everything is written level by
level from dask arrays without materialising them, into a temporary folder that replaces
the target only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.io._atomic import atomic_directory
from napari_neuroseg.io._write_common import WriterError, halve_mean, halve_nearest, halving_pyramid

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
    channel_colors: Sequence[str] | None = None,
    chunks: int = 256,
    name: str | None = None,
    labels: Mapping[str, da.Array | np.ndarray] | None = None,
    label_classes: Sequence[str] | None = None,
    label_colors: Sequence[str] | None = None,
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
        Names of the ``c`` axis entries (stored as omero channel labels, with a display
        window of 0-1 for floats, the type's range for integers).
    channel_colors : sequence of str, optional
        ``#rrggbb`` display colour of each channel (default white).
    chunks : int
        Chunk edge along y and x.
    name : str, optional
        Stored in the multiscales metadata.
    labels : Mapping of str to array, optional
        Label images ``(y, x)`` over an image, by name: written as NGFF 0.4 label images in
        ``labels/<name>`` with the image's scale and translate.
    label_classes : sequence of str, optional
        Name of label value ``k`` (``image-label`` properties, key ``"class"``).
    label_colors : sequence of str, optional
        ``#rrggbb`` colour of label value ``k`` (``image-label`` colours).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    WriterError
        For axes other than ``"yx"``/``"cyx"``, a data shape that does not match them, or
        labels that are not integers of the image's plane shape.
    """
    target = Path(path)
    if axes not in ("yx", "cyx"):
        raise WriterError(target, f"OME-Zarr axes must be 'yx' or 'cyx', not {axes!r}")
    array = da.asarray(data)
    if array.ndim != len(axes):
        raise WriterError(target, f"data has {array.ndim} dimensions but axes are {axes!r}")
    if kind not in ("image", "labels"):
        raise WriterError(target, f"kind must be 'image' or 'labels', not {kind!r}")
    label_arrays = _label_arrays(target, labels or {}, array.shape[-2:], kind)
    geometry = {"scale": scale, "translate": translate, "unit": unit, "chunks": chunks}
    with atomic_directory(target) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        attrs = _write_multiscale(root, array, axes, kind, name or target.stem, **geometry)
        if channel_names is not None:
            attrs["omero"] = _omero(channel_names, channel_colors, array.dtype)
        if kind == "labels":
            attrs["image-label"] = {"version": NGFF_VERSION}
        root.attrs.update(attrs)
        if label_arrays:
            group = root.create_group("labels")
            group.attrs.update({"labels": list(label_arrays)})
            for label_name, label in label_arrays.items():
                sub = group.create_group(label_name)
                label_attrs = _write_multiscale(sub, label, "yx", "labels", label_name,
                                                **geometry)
                label_attrs["image-label"] = _image_label(label_classes, label_colors)
                sub.attrs.update(label_attrs)
    return target


def _label_arrays(
    target: Path, labels: Mapping[str, Any], plane: tuple[int, ...], kind: str
) -> dict[str, da.Array]:
    """The label images as dask arrays, checked against the image's plane shape."""
    if labels and kind != "image":
        raise WriterError(target, "label images go inside an image, not inside labels")
    out = {}
    for label_name, data in labels.items():
        label = da.asarray(data)
        if not label_name or "/" in label_name or label_name.startswith("."):
            raise WriterError(target, f"bad label image name {label_name!r}")
        if label.shape != tuple(plane) or label.dtype.kind not in "iub":
            raise WriterError(
                target,
                f"label image {label_name!r} must be integers of shape {tuple(plane)}, "
                f"not {label.dtype} {label.shape}",
            )
        out[label_name] = label.astype(np.uint8) if label.dtype.kind == "b" else label
    return out


def _write_multiscale(
    group: Any,
    array: da.Array,
    axes: str,
    kind: str,
    name: str,
    *,
    scale: Sequence[float] | None,
    translate: Sequence[float] | None,
    unit: str | None,
    chunks: int,
) -> dict[str, Any]:
    """Write ``array``'s pyramid into ``group``; return its ``multiscales`` attributes."""
    halve = halve_nearest if kind == "labels" else halve_mean
    spatial = tuple(float(s) for s in (scale or (1.0, 1.0)))
    origin = tuple(float(t) for t in (translate or (0.0, 0.0)))
    lead = (1.0,) * (len(axes) - 2)
    datasets = []
    for i, level in enumerate(halving_pyramid(array, halve)):
        factor = 2**i
        level_chunks = (*level.shape[:-2], chunks, chunks)
        arr = group.create_array(
            str(i), shape=level.shape, chunks=level_chunks, dtype=level.dtype, fill_value=0
        )
        da.store(level.rechunk(level_chunks), arr, lock=False)
        transforms = [{"type": "scale", "scale": [*lead, *(s * factor for s in spatial)]}]
        # a level-i pixel centre sits (factor - 1) / 2 level-0 pixels from level 0's
        shift = [o + s * (factor - 1) / 2 for o, s in zip(origin, spatial, strict=True)]
        transforms.append({"type": "translation", "translation": [*(0.0,) * len(lead), *shift]})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": _axes_metadata(axes, unit),
                "datasets": datasets,
                "type": "mean" if kind == "image" else "nearest",
            }
        ]
    }


def _omero(
    names: Sequence[str], colors: Sequence[str] | None, dtype: np.dtype
) -> dict[str, Any]:
    """omero channel metadata: label, colour and display window of every channel."""
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
    else:
        low, high = 0.0, 1.0
    colors = list(colors) if colors is not None else ["#ffffff"] * len(names)
    window = {"min": low, "max": high, "start": low, "end": high}
    return {
        "channels": [
            {"label": str(n), "color": c.lstrip("#").upper(), "window": dict(window),
             "active": True}
            for n, c in zip(names, colors, strict=True)
        ]
    }


def _image_label(
    classes: Sequence[str] | None, colors: Sequence[str] | None
) -> dict[str, Any]:
    """NGFF 0.4 ``image-label`` metadata: colours and class names by label value."""
    meta: dict[str, Any] = {"version": NGFF_VERSION, "source": {"image": "../../"}}
    if colors:
        meta["colors"] = [
            {"label-value": k, "rgba": [*_rgb(color), 0 if k == 0 else 255]}
            for k, color in enumerate(colors)
        ]
    if classes:
        meta["properties"] = [{"label-value": k, "class": str(c)} for k, c in enumerate(classes)]
    return meta


def _rgb(color: str) -> list[int]:
    """``"#rrggbb"`` as three 0-255 integers."""
    text = color.lstrip("#")
    return [int(text[i:i + 2], 16) for i in (0, 2, 4)]


def read_ome_zarr(path: str | os.PathLike[str]) -> tuple[list[da.Array], dict]:
    """Open a multiscale OME-Zarr written by :func:`write_ome_zarr` lazily.

    ``path`` is the image folder, or one of its label images (``<image>/labels/<name>``).

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
