"""The napari layer <-> :class:`LazyImage` codec, both directions in one place.

:func:`layer_kwargs` and :func:`to_layer_data` turn reader records into napari layer data
(the reader plugin, the sample data and the Open widget use them); :func:`image_from_layer`
turns an image layer back into the record behind it (no pixels read), and
:func:`stack_from_layers` does so for an MRI stack that napari split into one layer per
channel (:func:`channel_layers` finds the siblings).

Layers are duck-typed: anything with napari's ``data``, ``name``, ``scale``, ``translate``,
``metadata``, ``ndim`` and, optionally, ``rgb`` and ``multiscale`` attributes will do. This
module imports neither napari nor Qt (the readers' import contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dask.array as da
import numpy as np

from napari_neuroseg.io._types import LazyImage

__all__ = [
    "LAYER_CHUNK",
    "channel_layers",
    "image_from_layer",
    "image_layers",
    "image_modality",
    "layer_kwargs",
    "lazy_level",
    "stack_from_layers",
    "stack_name",
    "to_layer_data",
]

#: Chunk edge (pixels along y and x) given to layer data that is not a dask array and has no
#: chunks of its own: about a model tile, so reading a tile reads little more than the tile.
LAYER_CHUNK = 512
#: The keys of ``metadata["neuroseg"]`` that hold :class:`LazyImage` fields (the rest is the
#: reader's own ``metadata``).
_RECORD_KEYS = ("source", "modality", "axes", "unit", "warnings")


# --- LazyImage -> layer ---------------------------------------------------------------------


def layer_kwargs(image: LazyImage) -> dict[str, Any]:
    """napari layer keyword arguments for ``image`` (name, scale, metadata, display).

    The scale covers the spatial axes only: napari drops the RGB axis, and a ``channel_axis``
    in ``display`` splits the channels into separate layers that each get the spatial scale.

    Parameters
    ----------
    image : LazyImage
        The record to show.

    Returns
    -------
    dict
        Keyword arguments for ``viewer.add_image`` / ``add_labels``; the record's fields go to
        ``metadata["neuroseg"]``, where :func:`image_from_layer` finds them again.

    Raises
    ------
    ValueError
        A channel axis that neither ``rgb`` nor ``channel_axis`` tells napari how to show.
    """
    kwargs: dict[str, Any] = {
        "name": image.name,
        "scale": tuple(float(s) for s in image.scale),
        "units": tuple(image.unit for _ in image.scale),
        "metadata": {
            "neuroseg": {
                "source": image.source,
                "modality": image.modality,
                "axes": image.axes,
                "unit": image.unit,
                "warnings": list(image.warnings),
                **image.metadata,
            }
        },
    }
    if image.translate is not None:
        kwargs["translate"] = tuple(float(t) for t in image.translate)
    if image.multiscale:
        kwargs["multiscale"] = True
    kwargs.update(image.display)
    if "c" in image.axes and not kwargs.get("rgb", False) and "channel_axis" not in kwargs:
        raise ValueError(
            f"{image.source}: a {image.axes!r} image needs rgb=True or a channel_axis to display"
        )
    return kwargs


def to_layer_data(images: list[LazyImage]) -> list[tuple]:
    """Turn reader records into napari ``(data, kwargs, layer_type)`` tuples.

    Parameters
    ----------
    images : list of LazyImage

    Returns
    -------
    list of tuple
        One ``LayerDataTuple`` per record: the list of levels for a multiscale record, else
        its one level.
    """
    out = []
    for image in images:
        data = image.levels if image.multiscale else image.levels[0]
        out.append((data, layer_kwargs(image), image.kind))
    return out


# --- layer -> LazyImage ---------------------------------------------------------------------


def lazy_level(level: Any, rgb: bool) -> da.Array:
    """One level of a layer's data as a dask array, chunked for reading tiles.

    Dask arrays are kept as they are. Arrays with a chunk grid of their own (zarr) keep it.
    Anything else gets ``LAYER_CHUNK`` chunks along y and x: ``chunks="auto"`` would make
    128 MB chunks, and a batch of tiles computed together reads whole chunks (a 6688 x 6688
    chunk, 0.5 s, for eight 384-pixel tiles).

    Parameters
    ----------
    level : array-like
        Axes ``"...yx"``, or ``"...yxc"`` when ``rgb``.
    rgb : bool
        Whether the last axis holds the colour channels.

    Returns
    -------
    dask.array.Array
    """
    if isinstance(level, da.Array):
        return level
    native = getattr(level, "chunks", None)
    if (isinstance(native, tuple) and len(native) == level.ndim
            and all(isinstance(c, int) and c > 0 for c in native)):
        return da.from_array(level, chunks=native)
    n_yx = level.ndim - (1 if rgb else 0)
    chunks = [1] * (n_yx - 2) + [LAYER_CHUNK, LAYER_CHUNK] + ([-1] if rgb else [])
    return da.from_array(level, chunks=tuple(chunks[-level.ndim:]))


def image_from_layer(layer: Any) -> LazyImage:
    """The :class:`LazyImage` behind a napari image layer (no pixels read).

    Layers opened by this plugin carry their reader record (``metadata["neuroseg"]``:
    modality, axes, unit, source, warnings and the reader's metadata); other layers are
    described from their data: an RGB 2-D layer is a slide in µm, a 3-D one a volume in mm.
    The inverse of :func:`to_layer_data` except for ``display`` (napari's layer owns how it
    looks now) and a ``translate`` of None, which comes back as zeros.

    Parameters
    ----------
    layer : napari.layers.Image or alike
        Duck-typed (see the module docstring).

    Returns
    -------
    LazyImage
        Its levels are the layer's arrays (wrapped by :func:`lazy_level` when not dask).
    """
    meta = dict(layer.metadata.get("neuroseg", {}))
    data = list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]
    rgb = bool(getattr(layer, "rgb", False))
    levels = [lazy_level(level, rgb) for level in data]
    ndim = levels[0].ndim - (1 if rgb else 0)
    axes = meta.get("axes") or ("zyx"[-ndim:] + ("c" if rgb else ""))
    if "c" in axes and levels[0].ndim == len(axes) - 1:  # one channel of a split stack
        axes = axes.replace("c", "")
    modality = meta.get("modality") or ("slide" if rgb and ndim == 2 else
                                        "MR" if ndim == 3 else "slide")
    n_spatial = len(axes.replace("c", ""))
    scale = tuple(float(s) for s in layer.scale[-n_spatial:])
    translate = tuple(float(t) for t in layer.translate[-n_spatial:])
    extra = {k: v for k, v in meta.items() if k not in _RECORD_KEYS}
    return LazyImage(levels=levels, axes=axes, scale=scale,
                     unit=meta.get("unit") or ("um" if modality == "slide" else "mm"),
                     name=layer.name, modality=modality, source=meta.get("source") or layer.name,
                     translate=translate, metadata=extra,
                     warnings=list(meta.get("warnings") or []))


def image_modality(layer: Any) -> str:
    """``slide``, ``CT``, ``MR``... of a layer (from its reader metadata, else its shape)."""
    meta = layer.metadata.get("neuroseg", {})
    if meta.get("modality"):
        return str(meta["modality"])
    rgb = bool(getattr(layer, "rgb", False))
    return "slide" if rgb else ("MR" if layer.ndim == 3 else "slide")


def image_layers(layers: Iterable[Any], modalities: Sequence[str] | None = None) -> list[Any]:
    """The image layers among ``layers`` (a viewer's layer list), optionally only those of
    the given modalities (see :func:`image_modality`)."""
    out = []
    for layer in layers:
        if layer.__class__.__name__ != "Image":
            continue
        if modalities is None or image_modality(layer) in modalities:
            out.append(layer)
    return out


def channel_layers(layers: Sequence[Any], layer: Any) -> list[Any]:
    """``layer`` and its sibling channels when a reader split a multi-channel stack.

    A Kaggle LGG patient or a multi-channel TIFF opened by this plugin becomes one image layer
    per channel (napari's ``channel_axis``); their metadata still says ``"zyxc"``. The
    siblings share the source and patient and are returned in file channel order.

    Parameters
    ----------
    layers : sequence of layers
        Where to look (a viewer's layer list).
    layer : napari.layers.Image or alike
        One channel (or a layer that is no channel: it comes back alone).

    Returns
    -------
    list
        The channel layers, in the order of ``metadata["neuroseg"]["channels"]``.
    """
    meta = layer.metadata.get("neuroseg", {})
    axes = str(meta.get("axes") or "")
    if "c" not in axes or layer.ndim != len(axes) - 1:
        return [layer]
    keys = ("source", "patient_id", "axes")

    def key(other: Any) -> tuple:
        return tuple(other.metadata.get("neuroseg", {}).get(k) for k in keys)

    group = [other for other in layers
             if other.__class__.__name__ == "Image" and other.data.shape == layer.data.shape
             and key(other) == key(layer)]
    names = list(meta.get("channels") or [])
    if names:
        def order(other: Any) -> int:
            hits = [i for i, n in enumerate(names) if other.name.endswith(f" {n}")]
            return hits[0] if hits else len(names)
        group.sort(key=order)
    return group


def stack_from_layers(layers: Sequence[Any]) -> LazyImage:
    """One ``"zyx"`` (one layer) or ``"zyxc"`` (one layer per channel) record, lazily stacked.

    Scale, translate and unit come from the first layer (the channels share them).

    Parameters
    ----------
    layers : sequence of layers
        3-D layers, one per channel (as :func:`channel_layers` gives them).

    Returns
    -------
    LazyImage
        Modality ``"MR"``, named by :func:`stack_name`; ``metadata["channels"]`` holds the
        layer names.

    Raises
    ------
    ValueError
        The first layer is not a single-scale 3-D grey stack.
    """
    first = layers[0]
    if first.ndim != 3 or getattr(first, "rgb", False) or getattr(first, "multiscale", False):
        raise ValueError(f"{first.name}: expected a 3-D (z, y, x) stack, got "
                         f"{first.ndim}-D data")
    arrays = [layer.data if isinstance(layer.data, da.Array)
              else da.from_array(np.asarray(layer.data), chunks=(1, *layer.data.shape[1:]))
              for layer in layers]
    data = arrays[0] if len(arrays) == 1 else da.stack(arrays, axis=-1)
    meta = first.metadata.get("neuroseg", {})
    return LazyImage(
        levels=[data], axes="zyx" if len(arrays) == 1 else "zyxc",
        scale=tuple(float(s) for s in first.scale), unit=str(meta.get("unit") or "mm"),
        name=stack_name(layers), modality="MR", source=str(meta.get("source") or first.name),
        translate=tuple(float(t) for t in first.translate),
        metadata={"voxel_size": meta.get("voxel_size", "known"),
                  "channels": [layer.name for layer in layers]},
    )


def stack_name(layers: Sequence[Any]) -> str:
    """The name the layers share (an LGG patient id), else the first layer's name."""
    if len(layers) == 1:
        return str(layers[0].name)
    prefix = str(layers[0].name)
    for layer in layers[1:]:
        while not str(layer.name).startswith(prefix):
            prefix = prefix[:-1]
    return prefix.strip(" _-") or str(layers[0].name)
