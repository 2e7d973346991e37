"""Small napari helpers of the Annotate widget: palettes on layers, layer lookups."""

from typing import Any

from napari.utils.colormaps import DirectLabelColormap

from napari_neuroseg.annotate.palette import ClassMap

__all__ = ["apply_palette", "class_map_of", "labels_layers", "layer_level0", "shapes_layers"]


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
