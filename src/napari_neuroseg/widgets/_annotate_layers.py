"""Small napari helpers of the Annotate widget: palettes on layers, layer lookups."""

from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap, label_colormap

from napari_neuroseg.annotate.layer_classes import class_map_of_metadata
from napari_neuroseg.annotate.palette import ClassMap

__all__ = ["apply_palette", "class_map_of", "labels_layers", "layer_level0", "own_class_map",
           "palette_conflict", "shapes_layers"]


def labels_layers(viewer: Any) -> list[Any]:
    """The viewer's Labels layers."""
    return [layer for layer in viewer.layers if layer.__class__.__name__ == "Labels"]


def shapes_layers(viewer: Any) -> list[Any]:
    """The viewer's Shapes layers."""
    return [layer for layer in viewer.layers if layer.__class__.__name__ == "Shapes"]


def layer_level0(layer: Any) -> tuple[Any, tuple[float, float], tuple[float, float]]:
    """A 2-D layer's finest data and its (y, x) ``scale`` and ``translate``."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if data.ndim != 2:
        raise ValueError(f"{layer.name} is {data.ndim}-D; a 2-D labels layer is needed here")
    scale = tuple(float(s) for s in layer.scale[-2:])
    translate = tuple(float(t) for t in layer.translate[-2:])
    return data, (scale[0], scale[1]), (translate[0], translate[1])


def apply_palette(layer: Any, class_map: ClassMap) -> None:
    """Colours and class names of ``class_map`` on a labels layer (the status bar names them).

    Instance maps keep napari's cyclic colours; every map is recorded in the layer metadata
    (``neuroseg.class_map``) for the export.
    """
    colors = class_map.color_dict()
    if colors is not None:
        layer.colormap = DirectLabelColormap(color_dict=colors)
    elif isinstance(layer.colormap, DirectLabelColormap):  # was a class palette
        layer.colormap = label_colormap()
    features = class_map.features()
    if features is not None:
        layer.features = features
    meta = dict(layer.metadata.get("neuroseg", {}))
    meta.update(class_map=class_map.to_dict(), classes=list(class_map.names))
    layer.metadata = {**layer.metadata, "neuroseg": meta}


def class_map_of(layer: Any) -> ClassMap | None:
    """The class map a layer carries (set by :func:`apply_palette` or a result layer)."""
    meta = layer.metadata.get("neuroseg", {}) if layer is not None else {}
    if "class_map" in meta:
        try:
            return ClassMap.from_dict(meta["class_map"])
        except ValueError:
            return None
    return None


def _hex(rgba: Any) -> str:
    r, g, b = (round(float(c) * 255) for c in np.asarray(rgba).ravel()[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def own_class_map(layer: Any) -> ClassMap | None:
    """The class map a layer's labels are in by what made them; None for a plain layer.

    A result layer: its model's classes (a Nuclei result: instance labels); a label store's
    layer: the store's. A result of a model the registry does not know (a user checkpoint)
    that lists its class names: those names in the layer's own colours.
    """
    if layer is None:
        return None
    meta = layer.metadata.get("neuroseg", {})
    found = class_map_of_metadata(meta)
    names = meta.get("classes")
    if found is None and meta.get("model") and names and len(set(names)) == len(names) > 1:
        colors = tuple(_hex(layer.colormap.map(np.array([i]))[0]) for i in range(len(names)))
        found = ClassMap(tuple(str(n) for n in names), colors, title=str(meta["model"]))
    return found


def palette_conflict(layer: Any, class_map: ClassMap) -> str | None:
    """Why ``class_map`` must not be put on ``layer`` (None when it may).

    A layer keeps the classes of what made it (:func:`own_class_map`); a plain layer takes
    any class map its labels fit in (a semantic map needs every label below its class
    count; an in-memory array is checked, a lazy one is not read).
    """
    own = own_class_map(layer)
    if own is not None:
        if own.names == class_map.names and own.kind == class_map.kind:
            return None
        return (f"{layer.name} holds {own.title or 'its own'} labels "
                f"({', '.join(own.names[1:])}); it keeps its classes. Use "
                "'New annotation layer' to paint with "
                f"{class_map.title or 'another class map'}.")
    data = getattr(layer, "data", None)
    if class_map.kind == "semantic" and isinstance(data, np.ndarray) and data.size:
        top = int(data.max())
        if top >= class_map.n_classes:
            return (f"{layer.name} has labels up to {top}; {class_map.title or 'the class map'}"
                    f" has {class_map.n_classes} classes (0-{class_map.n_classes - 1})")
    return None
