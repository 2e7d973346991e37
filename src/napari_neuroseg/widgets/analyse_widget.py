"""The Analyse widget: a slide model over what is on screen, or over the whole slide.

Thin over :class:`napari_neuroseg.live.LiveSession`: the model, the slide plan (level, Macenko
fit, tissue mask) and the session are built in a worker; one long-lived generator worker runs
``session.serve`` and every update refreshes the result layers. In live mode the camera's
centre and zoom (and the canvas size) are debounced, turned into the visible world box and
handed to ``session.request``, which queues only tiles not computed yet, nearest first.
With "Coarse preview first" on, a view that needs many tiles is first painted by the model on
a coarser grid (a few tiles for the whole view; the status says it is a preview and at what
µm/px), then refined tile by tile from the centre outwards. The slide and model choosers,
cancellation and teardown are those of
:class:`~napari_neuroseg.widgets._slide_view.SlideViewWidget`.
"""

import time
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FloatSlider, PushButton
from qtpy.QtCore import QTimer

from napari_neuroseg.analysis import plan_slide
from napari_neuroseg.engine import TileCache
from napari_neuroseg.io import LazyImage
from napari_neuroseg.live import LiveSession, LiveUpdate, ViewTooLarge, visible_box
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets._live_layers import RetiredStores, show_heatmap, show_labels
from napari_neuroseg.widgets._results import HEATMAP_COLORMAPS
from napari_neuroseg.widgets._slide_view import SlideViewWidget
from napari_neuroseg.widgets._workers import report_error, start_worker, warn

if TYPE_CHECKING:
    import napari

SLIDE_MODELS = ("gbm-tissue-8", "lgg-tissue", "nuclei-lenet")
DEBOUNCE_MS = 100
REFRESH_MS = 50
MARGIN = 0.1
ESTIMATE_AFTER = 4  # tiles done before a whole-image run shows its time left


def build_session(image: LazyImage, source: ModelSource, stain: bool, tissue: bool,
                  cache: TileCache, preview: bool = True) -> LiveSession:
    """Load the model and plan the slide (runs in a worker: model loading, Macenko, mask)."""
    spec = source.spec()
    runner = source.runner()
    plan = plan_slide(image, spec, stain_normalization=stain, tissue_only=tissue)
    return LiveSession(plan, runner, source.key(), cache=cache, batch_size=4, preview=preview)


class WholeClock:
    """Estimates the time left of a whole-image run from its pace so far."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def left(self, done: int, pending: int) -> str:
        """``", about 3 min left"`` once a few tiles are done; ``""`` before."""
        elapsed = time.monotonic() - self.started
        if done < ESTIMATE_AFTER or elapsed <= 0:
            return ""
        seconds = elapsed / done * pending
        text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
        return f", about {text} left"


class AnalyseWidget(SlideViewWidget):
    """Segment a slide live (what is on screen) or whole, into labels and a heatmap.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    TASKS = ("semantic_segmentation", "tile_classification")
    MODELS = SLIDE_MODELS
    TITLE = "Analyse"
    DEBOUNCE_MS = DEBOUNCE_MS
    RESULT_LAYERS = ("labels_layer", "heatmap_layer")

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(viewer)
        self.stain = CheckBox(text="Stain normalisation (Macenko)", value=True)
        self.tissue = CheckBox(text="Tissue only", value=True)
        self.live = CheckBox(text="Live: analyse what is on screen", value=False)
        self.preview = CheckBox(text="Coarse preview first", value=True)
        self.whole_button = PushButton(text="Whole image / all tissue")
        self.heat_class = ComboBox(label="Heatmap class", choices=self._class_choices)
        self.colormap = ComboBox(label="Colormap", choices=list(HEATMAP_COLORMAPS),
                                 value="inferno")
        self.opacity = FloatSlider(label="Opacity", min=0.0, max=1.0, value=0.5)
        self.session: LiveSession | None = None
        self.session_config: tuple[Any, ...] | None = None
        self.labels_layer: Any = None
        self.heatmap_layer: Any = None
        self._serve_worker: Any = None
        self._build_worker: Any = None
        self._then: Any = None
        self._whole = False
        self._errors: set[str] = set()
        self.counts = {"computed": 0, "cached": 0, "skipped": 0}
        self._refresh = QTimer()
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self._refresh_layers)
        for widget in (self.layer, self.picker.model, self.picker.file, self.picker.device,
                       self.stain, self.tissue):
            widget.changed.connect(self._on_config_changed)
        self.mpp.value_box.changed.connect(self._on_config_changed)  # after the rescale
        self.live.changed.connect(self._on_live)
        self.preview.changed.connect(self._on_preview)
        self.whole_button.changed.connect(self.run_whole)
        self.heat_class.changed.connect(self._on_heat_class)
        self.colormap.changed.connect(self._on_display)
        self.opacity.changed.connect(self._on_display)
        self._note = ""  # what the status keeps in front of tile counts ("Cancelled")
        self._whole_clock = WholeClock()
        self._shown_store: Any = None  # the store the result layers show
        self._retired = RetiredStores(lambda: [self._shown_store])
        self.lay_out([self.stain, self.tissue, self.live, self.preview, self.whole_button],
                     display=[self.heat_class, self.colormap, self.opacity])

    # -- choices and configuration ----------------------------------------------------------
    def settings(self) -> tuple[Any, ...]:
        """Stain normalisation and tissue only (either re-plans the slide)."""
        return (self.stain.value, self.tissue.value)

    def _class_choices(self, _widget: Any = None) -> list[str]:
        session = getattr(self, "session", None)
        return list(session.plan.spec.classes) if session is not None else []

    def _on_config_changed(self, _value: Any = None) -> None:
        """A new slide, model or preprocessing: a new session (cached tiles are kept)."""
        if self.session is not None and self.session_config != self._config():
            self._retire()
            self.status.value = "Settings changed: results will be recomputed."
            if self.live.value:
                self.ensure_session(self.request_view)

    # -- session lifecycle ------------------------------------------------------------------
    def ensure_session(self, then: Any = None) -> None:
        """Build the session for the current settings in a worker, then call ``then()``."""
        if self.session is not None and self.session_config == self._config():
            if then is not None:
                then()
            return
        self._then = then
        if self._build_worker is not None:
            return
        try:
            image, source = self._slide_and_source()
        except ValueError as err:
            self._fail(err)
            return
        if self.picker.warning:
            warn(self.picker.warning)
        config = self._config()
        self.status.value = f"Loading {source.model} and planning the slide ..."
        self._build_worker = start_worker(
            build_session, image, source, self.stain.value, self.tissue.value, self.cache,
            bool(self.preview.value),
            on_done=lambda session: self._install(session, config, source),
            on_error=self._fail,
            on_finish=self._build_finished)

    def _build_finished(self) -> None:
        self._build_worker = None

    def _install(self, session: LiveSession, config: tuple[Any, ...],
                 weights: ModelSource | None = None) -> None:
        if self._closed:  # the widget closed while the model was loading
            session.close()
            return
        self._retire()
        if config != self._config():  # settings changed while loading: build again
            session.close()
            self._build_worker = None
            self.ensure_session(self._then)
            return
        self.session, self.session_config = session, config
        self._source = weights
        self.counts = dict.fromkeys(self.counts, 0)
        self._errors.clear()
        spec = session.plan.spec
        self.heat_class.reset_choices()
        self.heat_class.value = spec.classes[-1]
        units = self._slide_units()
        self.labels_layer = show_labels(self._viewer, self.labels_layer, session,
                                        f"{spec.name} labels", units, weights)
        self.heatmap_layer = show_heatmap(
            self._viewer, self.heatmap_layer, session,
            list(spec.classes).index(self.heat_class.value), f"{spec.name} heatmap",
            self.colormap.value, self.opacity.value, units, weights)
        self._shown_store = session.store
        self._retired.sweep()  # the previous session's store, now that nothing shows it
        self._serve_worker = start_worker(session.serve, on_yield=self._on_update,
                                          on_error=self._fail)
        self._hold_gc()  # short full collections while tiles are computed
        self.status.value = "; ".join(session.plan.notes)
        then, self._then = self._then, None
        if then is not None:
            then()

    def _retire(self) -> None:
        """Stop the current session's worker; its layers stay (the next session's data
        replaces theirs: removing a layer vispy may be drawing crashed napari), and its store
        is closed once nothing shows it and the worker has finished."""
        session, worker = self.session, self._serve_worker
        self.session, self._serve_worker = None, None
        self._release_gc()
        self._set_whole(False)
        if session is None:
            return
        session.queue.close()
        if worker is not None:
            worker.quit()
        self._retired.add(session.store, worker)

    # -- requests ---------------------------------------------------------------------------
    def _on_live(self, value: bool) -> None:
        if value:
            self.ensure_session(self.request_view)
        else:
            self._debounce.stop()
            if self.session is not None and not self._whole:
                self.session.cancel()

    def _on_preview(self, value: bool) -> None:
        if self.session is not None:
            self.session.preview = bool(value)  # from the next view on

    def follows_view(self) -> bool:
        """In live mode, unless a whole-image run is going on."""
        return bool(self.live.value) and not self._whole

    def run_settled_view(self) -> int:
        """Queue the tiles of the view the camera settled on (see :meth:`request_view`)."""
        return self.request_view()

    def visible_box(self) -> Any:
        """The world box on screen (plus a margin), from the camera and the canvas size."""
        camera = self._viewer.scene.camera
        return visible_box(camera.center, camera.zoom, self._viewer.canvas.size, MARGIN)

    def request_view(self) -> int:
        """Queue the visible tiles not computed yet; the number queued (-1: no session)."""
        if self.session is None or self._whole:
            return -1
        self._note = ""
        try:
            queued = self.session.request(self.visible_box())
        except ViewTooLarge as err:
            self.status.value = str(err)
            return 0
        self.status.value = (f"{queued} new tile(s) queued" if queued
                             else "Everything visible is computed")
        return queued

    def run_whole(self) -> None:
        """Analyse every tile (every tissue tile with "Tissue only"), with progress."""
        self.ensure_session(self._start_whole)

    def _start_whole(self) -> None:
        assert self.session is not None
        self._set_whole(True)
        self._note = ""
        self._whole_clock = WholeClock()
        self.progress.value = 0
        self.status.value = "Queueing every tile ..."
        start_worker(self.session.request_all, on_error=self._fail)

    def cancel(self) -> None:
        """Stop the whole-image run (what is computed stays)."""
        if self.session is not None:
            self.session.cancel()
        self._set_whole(False)
        self._note = "Cancelled"  # kept in front of the tile counts that still arrive
        self.status.value = "Cancelled"
        if self.live.value:
            self._debounce.start()

    def _set_whole(self, value: bool) -> None:
        self._whole = value
        self.cancel_button.enabled = value
        self.whole_button.enabled = not value

    # -- updates ----------------------------------------------------------------------------
    def _on_update(self, update: LiveUpdate) -> None:
        if self._closed or self.session is None:  # delivered after close or a retired session
            return
        if update.error is not None:
            if update.error not in self._errors:
                self._errors.add(update.error)
                report_error(RuntimeError(update.error), "Analyse")
            self.status.value = f"Failed tiles: {update.error}"
            return
        for key in self.counts:
            self.counts[key] += getattr(update, key)
        if update.preview:  # painted at once: the preview is the first thing to show
            self._refresh.stop()
            self._refresh_layers()
            self.status.value = (f"Preview (the model at {update.preview_mpp:.3g} µm/px) of "
                                 f"the whole view; refining {update.pending} tile(s) ...")
            return
        if update.tiles and not self._refresh.isActive():
            self._refresh.start()
        left = ""
        if self._whole and update.requested:
            self.progress.value = round(100 * (1 - update.pending / update.requested))
            left = self._whole_clock.left(update.requested - update.pending, update.pending)
        c = self.counts
        preview = (f" ({len(self.session.previewed)} still a preview)"
                   if self.session.previewed and update.pending else "")
        counts = (f"{update.pending} tile(s) pending{preview}{left}; computed "
                  f"{c['computed']}, cached {c['cached']}, skipped {c['skipped']}")
        self.status.value = f"{self._note}: {counts}" if self._note else counts
        if self._whole and update.done:
            self._set_whole(False)
            self.status.value += " - whole image done"

    def _refresh_layers(self) -> None:
        for layer in (self.labels_layer, self.heatmap_layer):
            if layer is not None:
                layer.refresh()

    def _on_heat_class(self, value: Any = None) -> None:
        if (self.session is None or self.heatmap_layer is None
                or value not in self.session.plan.spec.classes):
            return  # (while a session is installed its heatmap is added with the class)
        index = list(self.session.plan.spec.classes).index(value)
        self.heatmap_layer = show_heatmap(
            self._viewer, self.heatmap_layer, self.session, index,
            f"{self.session.plan.spec.name} heatmap", self.colormap.value, self.opacity.value,
            self._slide_units(), self._source)

    def _on_display(self, _value: Any = None) -> None:
        if self.heatmap_layer is not None:
            self.heatmap_layer.colormap = self.colormap.value
            self.heatmap_layer.opacity = self.opacity.value

    def _fail(self, err: BaseException) -> None:
        if self._closed:
            return
        super()._fail(err)
        self._set_whole(False)

    def stop_work(self) -> list[Any]:
        """Stop the refresh timer and close the session's queue (the serving worker ends);
        the result layers stay in the viewer with their store (a temporary store is deleted
        when Python exits)."""
        self._refresh.stop()
        workers = [self._serve_worker, self._build_worker]
        session, self.session, self._serve_worker = self.session, None, None
        if session is not None:
            session.queue.close()
        return workers
