"""The Nuclei widget's view of nucleus types: a labels layer of type ids and a line of text.

When the model has a type branch (:attr:`NucleiResult.typed`), the widget adds a second labels
layer, ``"<model> types"``, whose pixels are type ids (0 background) drawn with one fixed
colour per type (:func:`~napari_neuroseg.analysis.nuclei_types.type_colors`); its ``class``
feature names the type under the cursor. The instance layer keeps napari's cyclic colours, so
touching nuclei stay apart. The type image is computed in the worker
(:attr:`NucleiResult.type_labels`); here it is only shown.
"""

from typing import Any

from napari.utils.colormaps import DirectLabelColormap

from napari_neuroseg.analysis.nuclei_types import type_colors
from napari_neuroseg.analysis.region import NucleiResult

__all__ = ["remove_types_layer", "show_types_layer", "type_colormap", "types_text"]


def type_colormap(type_names: tuple[str, ...]) -> DirectLabelColormap:
    """One fixed colour per type id; the background (and any other value) transparent."""
    colors: dict[Any, Any] = {i: c for i, c in enumerate(type_colors(type_names)) if i > 0}
    colors[0] = "transparent"
    colors[None] = "transparent"
    return DirectLabelColormap(color_dict=colors)


def _props(result: NucleiResult) -> dict[str, Any]:
    names = list(result.type_names)
    return {"colormap": type_colormap(result.type_names),
            "features": {"index": list(range(len(names))), "class": names}}


def show_types_layer(viewer: Any, layer: Any, result: NucleiResult, name: str,
                     kwargs: dict[str, Any], metadata: dict[str, Any]) -> Any:
    """Add the types layer, or update ``layer`` in place when it is still in the viewer.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari.layers.Labels or None
        The types layer of the previous result.
    result : NucleiResult
        A result with types (:attr:`NucleiResult.typed`).
    name : str
        The new layer's name.
    kwargs : dict
        Geometry (``scale``, ``translate``, ``units``) as for the instance layer.
    metadata : dict
        What made the layer (:func:`~napari_neuroseg.widgets._results.result_metadata`);
        the type names are added to it.

    Returns
    -------
    napari.layers.Labels
    """
    meta = {"neuroseg": {**metadata.get("neuroseg", {}), "classes": list(result.type_names)}}
    if layer is not None and layer in viewer.layers:
        layer.data = result.type_labels
        for key, value in {**kwargs, **_props(result)}.items():
            setattr(layer, key, value)
        layer.metadata = {**layer.metadata, **meta}
        return layer
    return viewer.add_labels(result.type_labels, name=name, opacity=0.6, metadata=meta,
                             **_props(result), **kwargs)


def remove_types_layer(viewer: Any, layer: Any) -> None:
    """Remove a types layer left by an earlier result (a model without types ran since)."""
    if layer is not None and layer in viewer.layers:
        viewer.layers.remove(layer)


def types_text(result: NucleiResult) -> str:
    """``"tumour 12 (340/mm²); immune 3 (85/mm²)"``: count and density per type."""
    density = result.type_density
    return "; ".join(f"{name} {n} ({density[name]:.0f}/mm²)"
                     for name, n in result.type_counts.items())
