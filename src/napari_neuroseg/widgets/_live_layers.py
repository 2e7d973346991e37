"""The Analyse widget's two result layers, kept across sessions: their data is replaced.

Removing a layer while vispy may still draw it (a settings change in a live session, a panel
closed mid-run) crashed napari in ``glDrawArrays``. So a new session (another model, stain
normalisation switched) does not remove the old session's layers: it points them at the new
session's store, with the new geometry, classes and colours. A layer the user removed is made
again. The old store is closed only once nothing shows it and its worker has finished
(:class:`RetiredStores`).
"""

from collections.abc import Callable
from typing import Any

from napari_neuroseg.live import LiveSession
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets._results import (
    ANALYSE,
    add_heatmap_layer,
    add_labels_layer,
    heatmap_layer_props,
    labels_layer_props,
)

__all__ = ["RetiredStores", "show_heatmap", "show_labels"]


def _in_viewer(viewer: Any, layer: Any) -> bool:
    return layer is not None and layer in viewer.layers


def _reuse(layer: Any, props: dict[str, Any], session: LiveSession, name: str,
           units: Any) -> Any:
    """Point ``layer`` at another session: its data, geometry, look and metadata."""
    for key, value in props.items():
        setattr(layer, key, {**layer.metadata, **value} if key == "metadata" else value)
    layer.scale = session.plan.scale
    layer.translate = session.plan.translate
    if units is not None:
        layer.units = units
    layer.name = name
    return layer


def show_labels(viewer: Any, layer: Any, session: LiveSession, name: str,
                units: Any = None, source: ModelSource | None = None) -> Any:
    """Show ``session``'s labels in ``layer`` (a new layer when it is gone); returns it.

    ``source`` (the weights that ran) is recorded in the layer's metadata, so the Train
    widget can start from that checkpoint.
    """
    if not _in_viewer(viewer, layer):
        return add_labels_layer(viewer, session, name, units, source=source)
    return _reuse(layer, labels_layer_props(session, source, ANALYSE), session, name, units)


def show_heatmap(viewer: Any, layer: Any, session: LiveSession, class_index: int, name: str,
                 colormap: str = "inferno", opacity: float = 0.5, units: Any = None,
                 source: ModelSource | None = None) -> Any:
    """Show one class's probabilities of ``session`` in ``layer`` (new when gone)."""
    if not _in_viewer(viewer, layer):
        return add_heatmap_layer(viewer, session, class_index, name, colormap, opacity, units,
                                 source=source)
    props = heatmap_layer_props(session, class_index, source, ANALYSE)
    return _reuse(layer, props, session, name, units)


class RetiredStores:
    """Stores of retired sessions, closed once no layer shows them and their worker is done.

    Parameters
    ----------
    shown : callable
        Returns the stores the widget's layers show now.
    """

    def __init__(self, shown: Callable[[], list[Any]]) -> None:
        self._shown = shown
        self._waiting: list[tuple[Any, Any]] = []  # (store, worker or None)

    def add(self, store: Any, worker: Any) -> None:
        """Close ``store`` when ``worker`` (None: none) has finished and no layer shows it."""
        self._waiting.append((store, worker))
        if worker is not None:
            worker.finished.connect(self.sweep)
        self.sweep()

    def sweep(self) -> None:
        """Close every store that may be closed now."""
        shown = [id(store) for store in self._shown()]
        keep = []
        for store, worker in self._waiting:
            if id(store) in shown or (worker is not None and worker.is_running):
                keep.append((store, worker))
            else:
                store.close()
        self._waiting = keep

    def __len__(self) -> int:
        return len(self._waiting)
