"""Analyse the region on screen of a slide: the machinery the Nuclei and Stain widgets share.

Built on :class:`~napari_neuroseg.widgets._slide_view.SlideViewWidget` (slide, model, view,
cancel and close, shared with the Analyse widget); this module adds the one-region run.

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

from magicgui.widgets import CheckBox, PushButton, SpinBox
from qtpy.QtCore import QTimer

from napari_neuroseg.analysis.region import (
    DEFAULT_MAX_SIZE,
    RegionResult,
)
from napari_neuroseg.analysis.slide import SlidePlan, plan_slide
from napari_neuroseg.engine import Region, TileCache
from napari_neuroseg.io import LazyImage
from napari_neuroseg.live.viewport import box_to_pixels, visible_box
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets._results import result_metadata
from napari_neuroseg.widgets._slide_view import SlideViewWidget
from napari_neuroseg.widgets._workers import start_worker, warn

if TYPE_CHECKING:
    import napari

DEBOUNCE_MS = 250
PROGRESS_MS = 100


@dataclass
class PlannedModel:
    """A model loaded and a slide planned for it, reused while the settings stay the same.

    (Not :class:`napari_neuroseg.models.checkpoint.LoadedModel`, a checkpoint's network.)
    """

    config: tuple[Any, ...]
    plan: SlidePlan
    runner: Any
    key: str


def analyse_view(analyse: Callable[..., RegionResult], image: LazyImage, source: ModelSource,
                 config: tuple[Any, ...], loaded: PlannedModel | None, region: Region,
                 max_size: int, tissue_only: bool, cache: TileCache, stop: threading.Event,
                 progress: list[int], quick: Callable[..., RegionResult] | None = None
                 ) -> Iterator[tuple[PlannedModel, RegionResult]]:
    """Load the model and plan the slide (unless ``loaded`` fits), then analyse ``region``.

    Runs in a worker, as a generator: with ``quick`` (``quick(plan, region, max_size=...)``)
    it first yields ``(loaded, preview)``, then returns ``(loaded, result)``. ``progress``
    receives ``[done, total]`` tiles; ``stop`` cancels.
    """
    if loaded is None or loaded.config != config:
        spec = source.spec()
        runner = source.runner()
        plan = plan_slide(image, spec, tissue_only=tissue_only)
        loaded = PlannedModel(config, plan, runner, source.key())
    if quick is not None and not stop.is_set():
        yield loaded, quick(loaded.plan, region, max_size=max_size)

    def on_progress(done: int, total: int) -> None:
        progress[:] = [done, total]

    result = analyse(loaded.plan, loaded.runner, region, max_size=max_size, cache=cache,
                     model_key=loaded.key, should_stop=stop.is_set, on_progress=on_progress)
    return loaded, result


class ViewAnalysisWidget(SlideViewWidget):
    """A slide model over the region on screen, into one result layer (a base class).

    Subclasses set :attr:`TASKS`, :attr:`MODELS`, :attr:`TITLE` and :meth:`analyse` (a
    function of :mod:`napari_neuroseg.analysis.region`) and implement :meth:`show_result`.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    RUN_TEXT = "Analyse the view"
    DEBOUNCE_MS = DEBOUNCE_MS
    RESULT_LAYERS = ("result_layer",)
    #: A fast stand-in shown before the model's result (``quick(plan, region, max_size=)``
    #: returning a :class:`RegionResult` whose ``preview`` says what it is), or None.
    quick: Callable[..., RegionResult] | None = None

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(viewer)
        self.tissue = CheckBox(text="Tissue only", value=True)
        self.max_size = SpinBox(label="Largest side (working px)", min=256, max=16384,
                                step=256, value=DEFAULT_MAX_SIZE)
        self.follow = CheckBox(text="Follow the view", value=False)
        self.preview = CheckBox(text="Quick preview first", value=True,
                                visible=self.quick is not None)
        self.run_button = PushButton(text=self.RUN_TEXT)
        self.result_layer: Any = None
        self.result: RegionResult | None = None
        self.loaded: PlannedModel | None = None
        self.runs = 0  # results shown
        self.previews = 0  # quick previews shown (those of stale runs are dropped)
        self.discarded = 0  # results of stale or cancelled runs, never shown
        self._worker: Any = None
        self._stop: threading.Event | None = None
        self._pending = False
        self._progress = [0, 0]
        self._warned = ""
        self._poll = QTimer()
        self._poll.setInterval(PROGRESS_MS)
        self._poll.timeout.connect(self._show_progress)
        self.follow.changed.connect(self._on_follow)
        self.run_button.changed.connect(self.run)
        self.lay_out([self.tissue, self.max_size, self.follow, self.preview, self.run_button])

    # -- to implement -----------------------------------------------------------------------
    @staticmethod
    def analyse(plan: SlidePlan, predictor: Any, region: Region, **kwargs: Any) -> RegionResult:
        """The analysis function run in the worker."""
        raise NotImplementedError

    def show_result(self, result: RegionResult) -> None:
        """Add or update the result layer and the text (on the GUI thread)."""
        raise NotImplementedError

    # -- settings ---------------------------------------------------------------------------
    def settings(self) -> tuple[Any, ...]:
        """Tissue only (a new tissue mask re-plans the slide)."""
        return (self.tissue.value,)

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

    def follows_view(self) -> bool:
        """With "Follow the view" on."""
        return bool(self.follow.value)

    def run_settled_view(self) -> None:
        """Analyse the view the camera settled on (see :meth:`run`)."""
        self.run()

    def run(self) -> None:
        """Analyse the region on screen; a run in progress is cancelled and this one follows."""
        if self._worker is not None:
            self._pending = True
            if self._stop is not None:
                self._stop.set()
            self.status.value = "View changed: stopping the previous run ..."
            return
        try:
            image, source = self._slide_and_source()
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
        self._hold_gc()  # short full collections while the run computes
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
    def _on_preview(self, out: tuple[PlannedModel, RegionResult]) -> None:
        self.loaded, result = out
        if self._stop is None or self._stop.is_set():
            return  # a newer view is on its way: this preview is of an old one
        self.show_result(result)
        self.previews += 1

    def _on_done(self, out: tuple[PlannedModel, RegionResult]) -> None:
        self.loaded, result = out
        if (self._stop is not None and self._stop.is_set()) or not result.complete:
            self.discarded += 1
            return  # stale or cancelled: a newer run follows, or the user stopped it
        self.result = result
        self.progress.value = 100
        self.show_result(result)
        self.runs += 1

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

    def _layer_kwargs(self, result: RegionResult) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"scale": result.scale, "translate": result.translate}
        units = self._slide_units()
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

    # -- teardown ---------------------------------------------------------------------------
    def stop_work(self) -> list[Any]:
        """Stop the progress timer, drop a waiting run and stop the one in progress."""
        self._poll.stop()
        self._pending = False
        if self._stop is not None:
            self._stop.set()
        return [self._worker]
