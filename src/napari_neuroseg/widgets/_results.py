"""Result layers of a live session: class labels and one class's probability heatmap.

Both are lazy multiscale views of the session's :class:`ResultStore` (read without dask, so a
refresh costs the GUI thread only the chunks it shows), placed with the
working level's ``scale``/``translate`` (napari places the coarser levels itself), and both
opt out of napari's dask cache: the store changes under them as tiles arrive.
"""

from typing import Any

from napari.utils.colormaps import DirectLabelColormap

from napari_neuroseg.live import LiveSession
from napari_neuroseg.models.spec import ModelSpec

__all__ = ["HEATMAP_COLORMAPS", "add_heatmap_layer", "add_labels_layer", "class_colormap"]

HEATMAP_COLORMAPS = ("inferno", "magma", "viridis", "turbo", "plasma", "gray")


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


def add_labels_layer(viewer: Any, session: LiveSession, name: str, units: Any = None) -> Any:
    """Add the session's label pyramid, class names as features (the status bar shows them)."""
    spec = session.plan.spec
    features = {"index": list(range(len(spec.classes))), "class": list(spec.classes)}
    return viewer.add_labels(
        session.store.labels_views(), name=name, colormap=class_colormap(spec),
        features=features, opacity=0.5, metadata={"neuroseg": {"model": spec.name,
                                                               "classes": list(spec.classes)}},
        **_geometry(session, units))


def add_heatmap_layer(viewer: Any, session: LiveSession, class_index: int, name: str,
                      colormap: str = "inferno", opacity: float = 0.5, units: Any = None) -> Any:
    """Add one class's probability pyramid as an image layer with contrast limits 0-1."""
    spec = session.plan.spec
    return viewer.add_image(
        session.store.heatmap_views(class_index), name=name, colormap=colormap,
        opacity=opacity, contrast_limits=(0.0, 1.0), blending="additive",
        metadata={"neuroseg": {"model": spec.name, "class": spec.classes[class_index]}},
        **_geometry(session, units))
