"""Result layers of a live session: class labels and one class's probability heatmap.

Both are lazy multiscale views of the session's :class:`ResultStore` (read without dask, so a
refresh costs the GUI thread only the chunks it shows), placed with the
working level's ``scale``/``translate`` (napari places the coarser levels itself), and both
opt out of napari's dask cache: the store changes under them as tiles arrive.

Every result layer of the plugin says what made it in ``metadata["neuroseg"]``
(:func:`result_metadata`): the model's name, the weights file that ran (so the Train widget can
start from it) and the analysis that made it.
"""

from pathlib import Path
from typing import Any

from napari.utils.colormaps import DirectLabelColormap

from napari_neuroseg.live import LiveSession
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.models.spec import ModelSpec

__all__ = ["ANALYSE", "HEATMAP_COLORMAPS", "add_heatmap_layer", "add_labels_layer",
           "class_colormap", "heatmap_layer_props", "labels_layer_props", "placement",
           "result_metadata"]

ANALYSE = "Analyse slide"  #: ``result_of`` of the Analyse widget's layers
HEATMAP_COLORMAPS = ("inferno", "magma", "viridis", "turbo", "plasma", "gray")


def result_metadata(source: ModelSource | None, spec: ModelSpec | None,
                    result_of: str) -> dict[str, Any]:
    """What made a result layer, for its ``metadata["neuroseg"]``.

    Parameters
    ----------
    source : ModelSource or None
        The weights that ran (a widget's ``picker.source()``).
    spec : ModelSpec or None
        The model's spec (its name is recorded; None: the source's model name).
    result_of : str
        The analysis that made the layer (a widget title such as ``"MRI"``).

    Returns
    -------
    dict
        ``{"model": name, "checkpoint": path or None, "result_of": result_of}``: the absolute
        path of the weights file that ran (a user's checkpoint, or the weights that ship with
        a registry model), None for random weights.
    """
    checkpoint = source.checkpoint if source is not None else None
    if spec is not None:
        name = spec.name
    elif checkpoint is not None:
        name = Path(checkpoint).stem
    else:
        name = source.model if source is not None else None
    return {"model": name,
            "checkpoint": str(Path(checkpoint).absolute()) if checkpoint is not None else None,
            "result_of": result_of}


def class_colormap(spec: ModelSpec) -> DirectLabelColormap:
    """The spec's class colours by label value; label 0 (background) transparent."""
    colors: dict[Any, Any] = {i: c for i, c in enumerate(spec.colors) if i > 0}
    colors[0] = "transparent"
    colors[None] = "transparent"
    return DirectLabelColormap(color_dict=colors)


def _geometry(session: LiveSession, units: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"scale": session.plan.scale, "translate": session.plan.translate,
                              "multiscale": True, "cache": False}
    if units is not None:
        kwargs["units"] = units
    return kwargs


def labels_layer_props(session: LiveSession, source: ModelSource | None = None,
                       result_of: str = ANALYSE) -> dict[str, Any]:
    """The session's label pyramid with its class colours, class names as features (the
    status bar shows them) and metadata (:func:`result_metadata`): what a labels layer of
    the session is made with, or set to when it is reused."""
    spec = session.plan.spec
    meta = {**result_metadata(source, spec, result_of), "classes": list(spec.classes)}
    return {"data": session.store.labels_views(), "colormap": class_colormap(spec),
            "features": {"index": list(range(len(spec.classes))), "class": list(spec.classes)},
            "metadata": {"neuroseg": meta}}


def heatmap_layer_props(session: LiveSession, class_index: int,
                        source: ModelSource | None = None,
                        result_of: str = ANALYSE) -> dict[str, Any]:
    """One class's probability pyramid (contrast limits 0-1) and its metadata."""
    spec = session.plan.spec
    meta = {**result_metadata(source, spec, result_of), "class": spec.classes[class_index]}
    return {"data": session.store.heatmap_views(class_index), "contrast_limits": (0.0, 1.0),
            "metadata": {"neuroseg": meta}}


def add_labels_layer(viewer: Any, session: LiveSession, name: str, units: Any = None, *,
                     source: ModelSource | None = None, result_of: str = ANALYSE) -> Any:
    """Add the session's labels layer (:func:`labels_layer_props`), aligned with the slide."""
    return viewer.add_labels(name=name, opacity=0.5,
                             **labels_layer_props(session, source, result_of),
                             **_geometry(session, units))


def add_heatmap_layer(viewer: Any, session: LiveSession, class_index: int, name: str,
                      colormap: str = "inferno", opacity: float = 0.5, units: Any = None, *,
                      source: ModelSource | None = None, result_of: str = ANALYSE) -> Any:
    """Add one class's probability pyramid as an image layer with contrast limits 0-1."""
    return viewer.add_image(name=name, colormap=colormap, opacity=opacity, blending="additive",
                            **heatmap_layer_props(session, class_index, source, result_of),
                            **_geometry(session, units))


def placement(layer: Any) -> dict[str, Any]:
    """Keyword arguments that put a new layer exactly over ``layer``."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate),
            "units": tuple(layer.units)}
