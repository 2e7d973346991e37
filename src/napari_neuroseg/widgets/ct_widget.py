"""The CT widget: slice metastasis probabilities, patient decision, Grad-CAM, brain mask, windows.

Pick a CT layer and a slice classifier; "Classify slices" plots each slice's metastasis
probability against its position along the stack, with the threshold and a marker on the slice
on screen, and states the patient-level decision (maximum over slices). Grad-CAM explains the
slice on screen; the brain mask fills a labels layer from the slice on screen outwards. All
computation, model loading included, runs in napari workers.

A model without trained weights (random weights) gets no patient decision: the widget shows
the warning instead, and the plot says "RANDOM weights". A run that fails leaves no decision
(nor an earlier run's curve) on screen.
"""

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
)
from napari.utils.colormaps import DirectLabelColormap

from napari_neuroseg.analysis.ct_view import (
    brain_masks,
    decision_text,
    iter_classify,
    mask_volume_ml,
    outward_planes,
    patient_decision,
    slice_gradcam,
    slice_positions_mm,
    window_limits,
)
from napari_neuroseg.io.layers import image_from_layer, image_layers
from napari_neuroseg.preprocess.ct import WINDOW_PRESETS
from napari_neuroseg.widgets._model_picker import ModelPicker
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._results import placement, result_metadata
from napari_neuroseg.widgets._slice_plot import SliceProbabilityPlot
from napari_neuroseg.widgets._workers import (
    connect_events,
    report_error,
    start_worker,
    stop_workers,
    warn,
)

if TYPE_CHECKING:
    import napari

BRAIN_COLOR = (0.0, 0.85, 1.0, 1.0)
TITLE = "CT"  # ``result_of`` of the widget's result layers
RANDOM_TITLE = "RANDOM weights: probabilities mean nothing"
NO_DECISION_RANDOM = ("no decision: the model has random weights (no trained model), so its "
                      "probabilities mean nothing; choose a trained checkpoint")
NOT_CLASSIFIED = "not classified yet"


class CTWidget(Container):
    """Slice classification, Grad-CAM, brain mask and window presets for a head-CT layer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer holding the CT layer; result layers are added to it.
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.layer = ComboBox(label="CT layer", choices=self._ct_layer_names)
        self.picker = ModelPicker(tasks=("slice_classification",))
        self.classify_button = PushButton(text="Classify slices")
        self.progress = ProgressBar(label="Slices", min=0, max=1, value=0)
        self.threshold = FloatSlider(label="Threshold", min=0.0, max=1.0, step=0.01, value=0.1)
        self.decision = Label(label="Patient", value=NOT_CLASSIFIED)
        self.cam_button = PushButton(text="Grad-CAM on this slice")
        self.cam_follow = CheckBox(text="Grad-CAM follows the slice", value=False)
        self.mask_button = PushButton(text="Brain mask")
        self.mask_progress = ProgressBar(label="Brain mask", min=0, max=1, value=0)
        self.windows = Container(layout="horizontal", labels=False, label="Window", widgets=[
            PushButton(text=name, name=name) for name in WINDOW_PRESETS])
        self.status = Label(label="Status", value="")
        self.plot = SliceProbabilityPlot()
        self.extend([self.layer, self.picker, self.classify_button, self.progress,
                     self.threshold, self.decision, self.cam_button, self.cam_follow,
                     self.mask_button, self.mask_progress, self.windows, self.status])
        self.native.layout().addWidget(self.plot)
        self.result: Any = None  # the last SliceClassification
        self.random_weights = False  # the result on screen came from random weights
        self._positions: np.ndarray | None = None  # every slice's position (mm)
        self.cam_layer: Any = None
        self.mask_layer: Any = None
        self.mask_volume_ml: float | None = None
        self._runner: tuple[tuple, Any] | None = None
        self._model_lock = threading.RLock()
        self._workers: dict[str, Any] = {}
        self._cam_pending: int | None = None
        self._warned: set[str] = set()
        self._set_threshold_from_model()
        self.picker.model.changed.connect(self._set_threshold_from_model)
        self.picker.file.changed.connect(self._set_threshold_from_model)
        self.threshold.changed.connect(self._on_threshold)
        self.classify_button.changed.connect(self.classify)
        self.cam_button.changed.connect(self.gradcam)
        self.mask_button.changed.connect(self.compute_brain_mask)
        for button in self.windows:
            button.changed.connect(lambda _=None, name=button.name: self.apply_window(name))
        self.layer.changed.connect(self._on_layer_changed)
        self._connections = [
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
            (viewer.dims.events.current_step, self._on_step),
        ]
        self._closed = False
        self._disconnect = connect_events(self.native, self._connections,
                                          on_teardown=self._teardown)
        fit_panel(self)

    # -- layers and slices --------------------------------------------------------------
    def _ct_layer_names(self, _widget: Any = None) -> list[str]:
        return [layer.name for layer in image_layers(self._viewer.layers, ("CT",))
                if layer.ndim == 3]

    def _on_layers_changed(self, _event: Any = None) -> None:
        self.layer.reset_choices()

    def _on_layer_changed(self, _value: Any = None) -> None:
        self._stop("classify")
        self._clear_classification(NOT_CLASSIFIED)

    def _clear_classification(self, decision: str) -> None:
        """No curve and no decision on screen (a new layer, a new run, a failed run)."""
        self.result, self._positions = None, None
        self.plot.set_curve(np.empty(0), np.empty(0))
        self.plot.set_marker(None)
        self.decision.value = decision

    @property
    def ct_layer(self) -> Any:
        """The chosen CT layer (``None`` when there is none)."""
        name = self.layer.value
        return self._viewer.layers[name] if name in self._viewer.layers else None

    def current_plane(self) -> int | None:
        """The CT layer's slice index on screen (from ``viewer.dims``)."""
        layer = self.ct_layer
        if layer is None:
            return None
        z = layer.world_to_data(self._viewer.dims.point)[0]
        return int(np.clip(round(float(z)), 0, layer.data.shape[0] - 1))

    def _on_step(self, _event: Any = None) -> None:
        plane = self.current_plane()
        if plane is None:
            return
        if self._positions is not None and plane < len(self._positions):
            self.plot.set_marker(float(self._positions[plane]))
        if self.cam_follow.value:
            self.gradcam()

    def _image(self) -> Any:
        layer = self.ct_layer
        if layer is None:
            raise ValueError("open a CT series first (File > Open, or the Open widget)")
        return image_from_layer(layer)

    # -- model --------------------------------------------------------------------------
    def _set_threshold_from_model(self, _value: Any = None) -> None:
        if self.result is None:  # the title belongs to the result when there is one
            self.plot.set_warning(RANDOM_TITLE if self.picker.random_weights else None)
        try:
            self.threshold.value = float(self.picker.source().spec().threshold)
        except (ValueError, OSError):
            return  # no checkpoint chosen yet: keep the current threshold

    def _source(self) -> Any:
        source = self.picker.source()
        message = self.picker.warning
        if message and message not in self._warned:
            self._warned.add(message)
            warn(message)
        return source

    def _load_runner(self, source: Any) -> Any:
        """The model runner of ``source``, loaded once (runs in a worker)."""
        key = (source.key(), source.device)  # a checkpoint's key is its weights' hash
        with self._model_lock:
            if self._runner is None or self._runner[0] != key:
                self._runner = (key, source.runner())
            return self._runner[1]

    def _locked(self, runner: Any) -> Any:
        def predict(batch: np.ndarray) -> np.ndarray:
            with self._model_lock:  # Grad-CAM hooks the same network: one user at a time
                return runner(batch)

        return predict

    # -- classification -----------------------------------------------------------------
    def classify(self, _value: Any = None) -> None:
        """Classify every slice of the chosen layer in a worker, plotting as results come."""
        try:
            image, source = self._image(), self._source()
        except ValueError as err:
            report_error(err, "CT")
            return
        self._stop("classify")
        self._clear_classification("classifying ...")
        self.random_weights = source.checkpoint is None
        self.plot.set_warning(RANDOM_TITLE if self.random_weights else None)
        self._positions = slice_positions_mm(image)
        self.progress.max, self.progress.value = int(image.shape[0]), 0
        self.status.value = "Classifying slices..."
        threshold = float(self.threshold.value)

        def job():
            runner = self._load_runner(source)
            yield from iter_classify(image, self._locked(runner), runner.spec,
                                     threshold=threshold)

        self._start("classify", job, on_yield=self._show_classification)

    def _show_classification(self, result: Any) -> None:
        self.result = result
        self.progress.value = len(result.planes)
        self.plot.set_curve(result.positions_mm, result.probabilities)
        self._on_threshold(self.threshold.value)
        self._on_step()
        if len(result.planes) == self.progress.max:
            self.status.value = f"Classified {len(result.planes)} slices"

    def _on_threshold(self, value: float) -> None:
        self.plot.set_threshold(float(value))
        if self.result is None or not len(self.result.planes):
            return
        if self.random_weights:  # a decision from random weights would look confident
            self.decision.value = NO_DECISION_RANDOM
        else:
            self.decision.value = decision_text(patient_decision(self.result, float(value)))

    # -- Grad-CAM -----------------------------------------------------------------------
    def gradcam(self, _value: Any = None) -> None:
        """Grad-CAM of the slice on screen, into a heatmap layer aligned with the CT.

        While one slice is computed, the latest request waits and runs next.
        """
        plane = self.current_plane()
        if plane is not None and self._workers.get("cam") is not None:
            self._cam_pending = plane
            return
        try:
            image, source = self._image(), self._source()
        except ValueError as err:
            report_error(err, "Grad-CAM")
            return
        name = self.ct_layer.name
        spacing = (float(image.scale[1]), float(image.scale[2]))
        self.status.value = f"Grad-CAM on slice {plane}..."

        def job():
            runner = self._load_runner(source)
            hu = np.asarray(image.levels[0][plane])
            with self._model_lock:
                cam = slice_gradcam(runner.model, runner.spec, hu, spacing)
            return name, plane, cam, result_metadata(source, runner.spec, TITLE)

        def next_request() -> None:
            pending, self._cam_pending = self._cam_pending, None
            if pending is not None and pending != plane:
                self.gradcam()

        self._start("cam", job, on_done=self._show_cam, on_finish=next_request)

    def _show_cam(self, result: tuple[str, int, np.ndarray, dict[str, Any]]) -> None:
        name, plane, cam, made_by = result
        if name not in self._viewer.layers:
            return
        source = self._viewer.layers[name]
        layer = self.cam_layer
        if (layer is None or layer not in self._viewer.layers
                or layer.data.shape != source.data.shape
                or layer.metadata.get("source_layer") != name):
            layer = self.cam_layer = self._viewer.add_image(
                np.zeros(source.data.shape, np.float32), name=f"{name} Grad-CAM",
                colormap="inferno", blending="additive", opacity=0.6, contrast_limits=(0, 1),
                metadata={"source_layer": name}, **placement(source))
        layer.metadata = {**layer.metadata, "neuroseg": made_by}
        layer.data[plane] = cam
        layer.refresh()
        self.status.value = f"Grad-CAM on slice {plane}"

    # -- brain mask ---------------------------------------------------------------------
    def compute_brain_mask(self, _value: Any = None) -> None:
        """Brain-extraction mask of every slice (slice on screen first) into a labels layer."""
        try:
            image = self._image()
        except ValueError as err:
            report_error(err, "Brain mask")
            return
        self._stop("mask")
        source = self.ct_layer
        self.mask_layer = self._viewer.add_labels(
            np.zeros(source.data.shape, np.uint8), name=f"{source.name} brain mask",
            colormap=DirectLabelColormap(color_dict={0: (0, 0, 0, 0), 1: BRAIN_COLOR,
                                                     None: (0, 0, 0, 0)}),
            features={"index": [0, 1], "class": ["background", "brain"]},
            opacity=0.4, **placement(source))
        self.mask_volume_ml = None
        self.mask_progress.max, self.mask_progress.value = int(image.shape[0]), 0
        spacing = (float(image.scale[1]), float(image.scale[2]))
        planes = outward_planes(self.current_plane() or 0, int(image.shape[0]))
        layer, positions = self.mask_layer, slice_positions_mm(image)

        def job():
            masks = np.zeros(image.shape, bool)
            for plane, mask in brain_masks(image.levels[0], spacing, planes):
                masks[plane] = mask
                yield plane, mask
            return mask_volume_ml(masks, positions, spacing)

        def show(item: tuple[int, np.ndarray]) -> None:
            layer.data[item[0]] = item[1]
            layer.refresh()
            self.mask_progress.value = min(self.mask_progress.value + 1, self.mask_progress.max)

        def done(volume: float) -> None:
            self.mask_volume_ml = volume
            self.status.value = f"Brain mask: {volume:.0f} ml"

        self.status.value = "Brain mask..."
        self._start("mask", job, on_yield=show, on_done=done)

    # -- windows ------------------------------------------------------------------------
    def apply_window(self, preset: str) -> None:
        """Set the CT layer's contrast limits to a window preset (``brain``, ``bone``...)."""
        layer = self.ct_layer
        if layer is None:
            report_error(ValueError("open a CT series first"), "Window")
            return
        layer.contrast_limits = window_limits(preset)

    # -- workers and closing ------------------------------------------------------------
    def _start(self, kind: str, job: Any, **callbacks: Any) -> None:
        finish = callbacks.pop("on_finish", None)

        def finished() -> None:
            if self._workers.get(kind) is worker:
                self._workers.pop(kind, None)
            if finish is not None:
                finish()

        def failed(err: BaseException) -> None:
            if self._workers.get(kind) is not worker:
                return  # a stopped run's error: a newer run owns the widget
            self.status.value = f"Failed: {err}"
            if kind == "classify":
                self._clear_classification("no decision: the classification failed")
            report_error(err, "CT")

        def current(callback: Any) -> Any:  # results of a stopped run are dropped
            return lambda value: callback(value) if self._workers.get(kind) is worker else None

        wrapped = {key: current(callback) for key, callback in callbacks.items()}
        worker = start_worker(job, on_error=failed,
                              on_finish=finished, **wrapped)
        self._workers[kind] = worker

    def _stop(self, kind: str) -> None:
        worker = self._workers.pop(kind, None)
        if worker is not None:
            worker.quit()

    def _teardown(self) -> None:
        """Stop the workers (waiting for them) and disconnect from the viewer (once; also when
        napari removes the dock or the viewer closes)."""
        if self._closed:
            return
        self._closed = True
        workers = list(self._workers.values())
        for kind in list(self._workers):
            self._stop(kind)
        self._disconnect()
        stop_workers(workers)

    def close(self) -> None:
        """Stop the workers, disconnect from the viewer and close."""
        self._teardown()
        super().close()
