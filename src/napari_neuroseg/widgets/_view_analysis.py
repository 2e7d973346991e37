"""Analyse the region on screen of a slide: the machinery the Nuclei and Stain widgets share.

The region on screen is the camera's visible world box (``viewer.scene.camera`` and the
canvas size, so it works with the viewer hidden) mapped to the slide's level-0 pixels. A
worker loads the model and plans the slide (once per slide and model), then runs it over that
region at the model's resolution (:mod:`napari_neuroseg.analysis.region`); the result replaces
the widget's one result layer, aligned with the slide. "Follow the view" re-runs when the
camera has stopped moving; a newer view cancels a run in progress. A subclass with a
:attr:`ViewAnalysisWidget.quick` function ("Quick preview first") shows its result for the
whole region first, labelled a preview, and the model's result replaces it in the same layer.
"""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton, SpinBox
from qtpy.QtCore import QTimer

from napari_neuroseg.analysis.region import (
    DEFAULT_MAX_SIZE,
    RegionResult,
)
from napari_neuroseg.analysis.slide import SlidePlan, plan_slide
from napari_neuroseg.engine import Region, TileCache
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import image_from_layer, image_layers
from napari_neuroseg.live.viewport import box_to_pixels, visible_box
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets._gc import GcFreeze
from napari_neuroseg.widgets._model_picker import ModelPicker
from napari_neuroseg.widgets._mpp import MppField
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._results import result_metadata
from napari_neuroseg.widgets._workers import (
    connect_events,
    forget_removed_layers,
    report_error,
    start_worker,
    stop_workers,
    view_events,
    warn,
)

if TYPE_CHECKING:
    import napari

DEBOUNCE_MS = 250
PROGRESS_MS = 100


@dataclass
class LoadedModel:
    """A model loaded and a slide planned for it, reused while the settings stay the same."""

    config: tuple[Any, ...]
    plan: SlidePlan
    runner: Any
    key: str


def analyse_view(analyse: Callable[..., RegionResult], image: LazyImage, source: ModelSource,
                 config: tuple[Any, ...], loaded: LoadedModel | None, region: Region,
                 max_size: int, tissue_only: bool, cache: TileCache, stop: threading.Event,
                 progress: list[int], quick: Callable[..., RegionResult] | None = None
                 ) -> Iterator[tuple[LoadedModel, RegionResult]]:
    """Load the model and plan the slide (unless ``loaded`` fits), then analyse ``region``.

    Runs in a worker, as a generator: with ``quick`` (``quick(plan, region, max_size=...)``)
    it first yields ``(loaded, preview)``, then returns ``(loaded, result)``. ``progress``
    receives ``[done, total]`` tiles; ``stop`` cancels.
    """
    if loaded is None or loaded.config != config:
        spec = source.spec()
        runner = source.runner()
        plan = plan_slide(image, spec, tissue_only=tissue_only)
        loaded = LoadedModel(config, plan, runner, source.key())
    if quick is not None and not stop.is_set():
        yield loaded, quick(loaded.plan, region, max_size=max_size)

    def on_progress(done: int, total: int) -> None:
        progress[:] = [done, total]

    result = analyse(loaded.plan, loaded.runner, region, max_size=max_size, cache=cache,
                     model_key=loaded.key, should_stop=stop.is_set, on_progress=on_progress)
    return loaded, result


class ViewAnalysisWidget(Container):
    """A slide model over the region on screen, into one result layer (a base class).

    Subclasses set :attr:`TASKS`, :attr:`MODELS`, :attr:`TITLE` and :meth:`analyse` (a
    function of :mod:`napari_neuroseg.analysis.region`) and implement :meth:`show_result`.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    TASKS: tuple[str, ...] = ()
    MODELS: tuple[str, ...] | None = None
    TITLE = "Analyse"
    RUN_TEXT = "Analyse the view"
    #: A fast stand-in shown before the model's result (``quick(plan, region, max_size=)``
    #: returning a :class:`RegionResult` whose ``preview`` says what it is), or None.
    quick: Callable[..., RegionResult] | None = None

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.layer = ComboBox(label="Slide", choices=self._slide_choices)
        self.mpp = MppField()
        self.picker = ModelPicker(self.TASKS, names=self.MODELS)
        self.tissue = CheckBox(text="Tissue only", value=True)
        self.max_size = SpinBox(label="Largest side (working px)", min=256, max=16384,
                                step=256, value=DEFAULT_MAX_SIZE)
        self.follow = CheckBox(text="Follow the view", value=False)
        self.preview = CheckBox(text="Quick preview first", value=True,
                                visible=self.quick is not None)
        self.run_button = PushButton(text=self.RUN_TEXT)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(value="Choose a slide and a model.")
        self.extend([self.layer, self.mpp, self.picker, self.tissue, self.max_size, self.follow,
                     self.preview, self.run_button, self.cancel_button, self.progress, self.status])
        self.cache = TileCache(max_bytes=256 * 2**20)
        self.result_layer: Any = None
        self.result: RegionResult | None = None
        self.loaded: LoadedModel | None = None
        self.runs = 0  # results shown
        self.previews = 0  # quick previews shown (those of stale runs are dropped)
        self.discarded = 0  # results of stale or cancelled runs, never shown
        self._worker: Any = None
        self._source: ModelSource | None = None  # the weights of the last run started
        self._stop: threading.Event | None = None
        self._pending = False
        self._progress = [0, 0]
        self._warned = ""
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.run)
        self._poll = QTimer()
        self._poll.setInterval(PROGRESS_MS)
        self._poll.timeout.connect(self._show_progress)
        self.follow.changed.connect(self._on_follow)
        self.layer.changed.connect(self._follow_layer)
        self._follow_layer()
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._events = view_events(viewer, self._on_camera, self._on_layers_changed)
        self._closed = False
        self._disconnect = connect_events(self.native, self._events,
                                          on_teardown=self._teardown)
        fit_panel(self)

    # -- to implement -----------------------------------------------------------------------
    @staticmethod
    def analyse(plan: SlidePlan, predictor: Any, region: Region, **kwargs: Any) -> RegionResult:
        """The analysis function run in the worker."""
        raise NotImplementedError

    def show_result(self, result: RegionResult) -> None:
        """Add or update the result layer and the text (on the GUI thread)."""
        raise NotImplementedError

    # -- choices ----------------------------------------------------------------------------
    def _slide_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in image_layers(self._viewer.layers, ("slide",))
                if not layer.metadata.get("neuroseg", {}).get("result_of")]  # no results

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.layer.reset_choices()
        forget_removed_layers(self, self._viewer, "result_layer")

    def _follow_layer(self, _value: Any = None) -> None:
        self.mpp.layer = self.layer.value

    def _config(self) -> tuple[Any, ...]:
        layer = self.layer.value
        scale = tuple(layer.scale) if layer is not None else None  # a new µm/px re-plans
        return (id(layer), scale, self.picker.model.value, str(self.picker.file.value),
                self.picker.device.value, self.tissue.value)

    # -- requests ---------------------------------------------------------------------------
    def visible_region(self) -> Region | None:
        """The level-0 pixels of the chosen slide under the canvas (None: off the slide)."""
        layer = self.layer.value
        camera = self._viewer.scene.camera
        box = visible_box(camera.center, camera.zoom, self._viewer.canvas.size)
        shape = layer.data[0].shape if getattr(layer, "multiscale", False) else layer.data.shape
        return box_to_pixels(box, layer.scale, layer.translate, shape)

    def _on_follow(self, value: bool) -> None:
        if value:
            self.run()
        else:
            self._debounce.stop()

    def _on_camera(self, _event: Any = None) -> None:
        if self.follow.value:
            self._debounce.start()

    def run(self) -> None:
        """Analyse the region on screen; a run in progress is cancelled and this one follows."""
        if self._worker is not None:
            self._pending = True
            if self._stop is not None:
                self._stop.set()
            self.status.value = "View changed: stopping the previous run ..."
            return
        try:
            if self.layer.value is None:
                raise ValueError("no slide: open one (File > Open, or the sample slide)")
            image = image_from_layer(self.layer.value)
            source = self.picker.source()
            region = self.visible_region()
            if region is None:
                raise ValueError("the view does not show the slide: pan or zoom to it")
        except ValueError as err:
            self._fail(err)
            return
        if self.picker.warning and self.picker.warning != self._warned:
            self._warned = self.picker.warning
            warn(self.picker.warning)
        self._source = source
        self._stop = threading.Event()
        self._progress = [0, 0]
        self.progress.value = 0
        self.cancel_button.enabled = True
        self.status.value = f"Analysing {region.shape[0]} x {region.shape[1]} slide pixels ..."
        self._poll.start()
        self._release_gc()
        self._gc_hold = GcFreeze()  # short full collections while the run computes
        self._worker = start_worker(
            analyse_view, self.analyse, image, source, self._config(), self.loaded, region,
            int(self.max_size.value), bool(self.tissue.value), self.cache, self._stop,
            self._progress, type(self).quick if self.preview.value else None,
            on_yield=self._on_preview, on_done=self._on_done, on_error=self._fail,
            on_finish=self._on_finish)

    def cancel(self) -> None:
        """Stop the run in progress (and any run waiting for it)."""
        self._pending = False
        if self._stop is not None:
            self._stop.set()
            self.status.value = "Cancelled"

    @property
    def busy(self) -> bool:
        """Whether a run is in progress or waiting."""
        return self._worker is not None or self._pending or self._debounce.isActive()

    # -- results ----------------------------------------------------------------------------
    def _on_preview(self, out: tuple[LoadedModel, RegionResult]) -> None:
        self.loaded, result = out
        if self._stop is None or self._stop.is_set():
            return  # a newer view is on its way: this preview is of an old one
        self.show_result(result)
        self.previews += 1

    def _on_done(self, out: tuple[LoadedModel, RegionResult]) -> None:
        self.loaded, result = out
        if (self._stop is not None and self._stop.is_set()) or not result.complete:
            self.discarded += 1
            return  # stale or cancelled: a newer run follows, or the user stopped it
        self.result = result
        self.progress.value = 100
        self.show_result(result)
        self.runs += 1

    def _release_gc(self) -> None:
        hold, self._gc_hold = getattr(self, "_gc_hold", None), None
        if hold is not None:
            hold.release()

    def _on_finish(self) -> None:
        self._release_gc()
        self._worker, self._stop = None, None
        self._poll.stop()
        self.cancel_button.enabled = False
        if self._pending:
            self._pending = False
            self.run()

    def _show_progress(self) -> None:
        done, total = self._progress
        if total:
            self.progress.value = round(100 * done / total)

    def _fail(self, err: BaseException) -> None:
        report_error(err, self.TITLE)
        self.status.value = f"Failed: {err}"

    def _layer_kwargs(self, result: RegionResult) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"scale": result.scale, "translate": result.translate}
        units = getattr(self.layer.value, "units", None)
        if units is not None:
            kwargs["units"] = tuple(units)[-2:]
        return kwargs

    def _result_metadata(self) -> dict[str, Any]:
        """What made the result layer: model, checkpoint (for "Start from"), widget."""
        spec = self.loaded.plan.spec if self.loaded is not None else None
        return {"neuroseg": result_metadata(self._source, spec, self.TITLE)}

    def _notes(self, result: RegionResult) -> str:
        c = result.counts
        tiles = f"tiles: {c.computed} computed, {c.cached} cached, {c.skipped} skipped"
        return "; ".join([tiles, *result.notes])

    def _teardown(self) -> None:
        """Stop the run (waiting for it), the timers, and disconnect from the viewer's
        events; once (on close, when napari removes the dock, or the viewer closes)."""
        if self._closed:
            return
        self._closed = True
        self._debounce.stop()
        self._poll.stop()
        self.mpp.layer = None
        self._pending = False
        if self._stop is not None:
            self._stop.set()
        self._release_gc()
        self._disconnect()
        stop_workers([self._worker])

    def close(self) -> None:
        """Stop the run, the timers and disconnect from the viewer's events."""
        self._teardown()
        super().close()
