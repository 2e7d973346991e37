"""The base of the widgets that run a slide model over the view: Analyse, Nuclei and Stain.

:class:`SlideViewWidget` holds what they share: the slide chooser and its µm/px field, the
model picker, the cancel button, progress bar and status line, the tile cache, the debounce
timer that follows the camera, the garbage-collection hold while tiles are computed, error
reporting, and the teardown that stops the workers and disconnects from the viewer when the
panel closes (by code, by napari's title-bar X, or with the viewer). A subclass adds its own
options and result layers, and says how it runs (:meth:`SlideViewWidget.run_settled_view`,
:meth:`SlideViewWidget.follows_view`, :meth:`SlideViewWidget.stop_work`).
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton
from qtpy.QtCore import QTimer

from napari_neuroseg.engine import TileCache
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import image_from_layer, image_layers
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets._gc import GcFreeze
from napari_neuroseg.widgets._model_picker import ModelPicker
from napari_neuroseg.widgets._mpp import MppField
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._workers import (
    connect_events,
    forget_removed_layers,
    report_error,
    stop_workers,
    view_events,
)

if TYPE_CHECKING:
    import napari

__all__ = ["CACHE_BYTES", "SlideViewWidget"]

#: Memory the tile cache of one widget may hold.
CACHE_BYTES = 256 * 2**20


class SlideViewWidget(Container):
    """A slide, a model and the view: the panel the slide analysis widgets share (a base).

    A subclass sets :attr:`TASKS`, :attr:`MODELS`, :attr:`TITLE`, :attr:`DEBOUNCE_MS` and
    :attr:`RESULT_LAYERS`, builds its own widgets after ``super().__init__`` and then calls
    :meth:`lay_out`, and implements :meth:`settings`, :meth:`follows_view`,
    :meth:`run_settled_view`, :meth:`cancel` and :meth:`stop_work`.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    #: Spec tasks and registry names the model picker offers.
    TASKS: tuple[str, ...] = ()
    MODELS: tuple[str, ...] | None = None
    #: Where errors come from in notifications.
    TITLE = "Analyse"
    #: How long the camera must rest before the view is analysed (ms).
    DEBOUNCE_MS = 250
    #: The attributes that hold the widget's result layers (None once the user deletes one).
    RESULT_LAYERS: tuple[str, ...] = ()

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.layer = ComboBox(label="Slide", choices=self._slide_choices)
        self.mpp = MppField()
        self.picker = ModelPicker(self.TASKS, names=self.MODELS)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(value="Choose a slide and a model.")
        self.cache = TileCache(max_bytes=CACHE_BYTES)
        self._source: ModelSource | None = None  # the weights the results come from
        self._gc_hold: GcFreeze | None = None
        self._closed = False
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(self.DEBOUNCE_MS)
        self._debounce.timeout.connect(self.run_settled_view)

    def lay_out(self, options: Sequence[Any], display: Sequence[Any] = ()) -> None:
        """Place the widgets (slide, µm/px, model, ``options``, cancel, progress,
        ``display``, status) and start following the slide chooser and the viewer.

        Call it at the end of the subclass's ``__init__``, after connecting its own handlers
        of the slide chooser (they run before the µm/px field follows the new slide).
        """
        self.extend([self.layer, self.mpp, self.picker, *options, self.cancel_button,
                     self.progress, *display, self.status])
        self.layer.changed.connect(self._follow_layer)
        self._follow_layer()
        self.cancel_button.changed.connect(self.cancel)
        self._events = view_events(self._viewer, self._on_camera, self._on_layers_changed)
        self._disconnect = connect_events(self.native, self._events,
                                          on_teardown=self._teardown)
        fit_panel(self)

    # -- to implement -----------------------------------------------------------------------
    def settings(self) -> tuple[Any, ...]:
        """The subclass's options that need a new model load or slide plan when they change."""
        raise NotImplementedError

    def follows_view(self) -> bool:
        """Whether a camera move should (after :attr:`DEBOUNCE_MS`) analyse the new view."""
        raise NotImplementedError

    def run_settled_view(self) -> Any:
        """Analyse the view once the camera has stopped moving."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop the run in progress (the cancel button)."""
        raise NotImplementedError

    def stop_work(self) -> list[Any]:
        """Ask the runs to stop (the widget is going away); returns the workers to wait for."""
        raise NotImplementedError

    # -- the slide and the model ------------------------------------------------------------
    def _slide_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in image_layers(self._viewer.layers, ("slide",))
                if not layer.metadata.get("neuroseg", {}).get("result_of")]  # no results

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.layer.reset_choices()
        forget_removed_layers(self, self._viewer, *self.RESULT_LAYERS)

    def _follow_layer(self, _value: Any = None) -> None:
        self.mpp.layer = self.layer.value

    def _config(self) -> tuple[Any, ...]:
        """Everything a loaded model and slide plan depend on: the slide and its µm/px, the
        weights, the device and the subclass's :meth:`settings`."""
        layer = self.layer.value
        scale = tuple(layer.scale) if layer is not None else None  # a new µm/px re-plans
        return (id(layer), scale, self.picker.model.value, str(self.picker.file.value),
                self.picker.device.value, *self.settings())

    def _slide_and_source(self) -> tuple[LazyImage, ModelSource]:
        """The chosen slide (no pixels read) and weights; ValueError says what is missing."""
        if self.layer.value is None:
            raise ValueError("no slide: open one (File > Open, or the sample slide)")
        return image_from_layer(self.layer.value), self.picker.source()

    def _slide_units(self) -> Any:
        """The slide layer's world units (None: napari's default), for the result layers."""
        return getattr(self.layer.value, "units", None)

    # -- the view ---------------------------------------------------------------------------
    def _on_camera(self, _event: Any = None) -> None:
        if self.follows_view():
            self._debounce.start()

    # -- runs -------------------------------------------------------------------------------
    def _hold_gc(self) -> None:
        """Keep full garbage collections short while tiles are computed (:mod:`._gc`)."""
        self._release_gc()
        self._gc_hold = GcFreeze()

    def _release_gc(self) -> None:
        hold, self._gc_hold = self._gc_hold, None
        if hold is not None:
            hold.release()

    def _fail(self, err: BaseException) -> None:
        report_error(err, self.TITLE)
        self.status.value = f"Failed: {err}"

    # -- teardown ---------------------------------------------------------------------------
    def _teardown(self) -> None:
        """Stop the timers and the runs (waiting for their workers), release the garbage
        collector and disconnect from the viewer's events; once (on close, when napari
        removes the dock, or when the viewer closes). Result layers stay in the viewer."""
        if self._closed:
            return
        self._closed = True
        self._debounce.stop()
        self.mpp.layer = None
        workers = self.stop_work()
        self._release_gc()
        self._disconnect()
        stop_workers(workers)

    def close(self) -> None:
        """Stop the runs and the timers and disconnect from the viewer's events."""
        self._teardown()
        super().close()
