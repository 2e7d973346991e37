"""The MRI widget: per-slice FLAIR segmentation of a whole stack, 3-D clean-up, tumour volume.

Pick an MRI stack (one channel of a Kaggle LGG patient opened by this plugin: its sibling
channel layers are stacked back in file order; a TIFF stack; a NIfTI volume), a model and a
device, and press "Segment stack". The stack is segmented slice by slice in a background
worker; results fill in a labels layer (class names and colours from the model spec) and a
probability heatmap, both aligned with the stack. The optional 3-D connected-component
clean-up and the tumour volume in ml are recomputed in a worker whenever their options
change. The clean-up works on the current labels: voxels the user painted or erased keep
the user's value, the model's own voxels are cleaned from the raw result (so loosening an
option brings back what a stricter one dropped), and the change is written as one undo step
(Ctrl+Z restores the labels as they were).
"""

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
)

from napari_neuroseg.analysis.cleanup import voxel_volume_ml
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import channel_layers, stack_from_layers
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.widgets._model_picker import ModelPicker
from napari_neuroseg.widgets._mri_jobs import cleanup_and_measure, load_model, segment_stack
from napari_neuroseg.widgets._mri_stack import StackComboBox
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._results import class_colormap, result_metadata
from napari_neuroseg.widgets._undoable import write_labels
from napari_neuroseg.widgets._workers import (
    connect_events,
    forget_removed_layers,
    report_error,
    start_worker,
    stop_workers,
    warn,
)

if TYPE_CHECKING:
    import napari

MRI_MODELS = ("mri-flair-unet", "mri-flair-transunet")
RESULT_MODALITY = "result"  # marks the widget's own layers so they are not offered as input
TITLE = "MRI"  # ``result_of`` of the widget's result layers


class MRIWidget(Container):
    """Segment an MRI stack slice by slice, clean it up in 3-D, and measure the tumour.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose MR stacks are offered and where the results are added.

    Attributes
    ----------
    load_model : callable
        ``ModelSource -> (predictor, spec)``, called in the worker
        (:func:`~napari_neuroseg.widgets._mri_jobs.load_model`; tests swap in a stand-in).
    planes_per_step : int
        Planes segmented between two progress updates (and Cancel checks).
    labels_layer, heatmap_layer : napari layers or None
        The results, once a segmentation started.
    last_measure : dict or None
        The latest clean-up and volume
        (:func:`~napari_neuroseg.widgets._mri_jobs.cleanup_and_measure`).
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.load_model: Callable[[ModelSource], Any] = load_model
        self.planes_per_step = 4
        self.layer = StackComboBox(viewer, label="MRI stack")
        self.picker = ModelPicker(tasks=("semantic_segmentation",), names=MRI_MODELS)
        self.segment_button = PushButton(text="Segment stack")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Slices", min=0, max=1, value=0)
        self.min_size = FloatSpinBox(label="Drop components below (0 = keep all)", min=0.0,
                                     max=1e6, step=0.01, value=0.0)
        self.size_unit = ComboBox(label="Size unit", choices=["ml", "voxels"], value="ml")
        self.single_slice = CheckBox(text="Drop components on a single slice", value=False)
        self.status = Label(value="Choose an MRI stack and a model.")
        self.volume = Label(value="")
        self.extend([self.layer, self.picker, self.segment_button, self.cancel_button,
                     self.progress, self.min_size, self.size_unit, self.single_slice,
                     self.status, self.volume])
        self.worker: Any = None
        self._stop = threading.Event()
        self._image: LazyImage | None = None
        self._raw: np.ndarray | None = None
        self._written: np.ndarray | None = None  # what the widget last wrote to the layer
        self._edited: np.ndarray | None = None  # voxels the user changed since
        self._done = 0
        self._source: ModelSource | None = None  # the weights of the current (last) run
        self._error: BaseException | None = None  # why the current (last) run failed
        self.labels_layer: Any = None
        self.heatmap_layer: Any = None
        self._cleanup_generation = 0
        self.last_measure: dict[str, Any] | None = None
        self.segment_button.changed.connect(self._on_segment)
        self.cancel_button.changed.connect(self.cancel)
        self.min_size.changed.connect(self.apply_cleanup)
        self.single_slice.changed.connect(self.apply_cleanup)
        self.size_unit.changed.connect(self._on_size_unit)
        self.picker.model.changed.connect(self._cleanup_from_model)
        self.picker.file.changed.connect(self._cleanup_from_model)
        self._closed = False
        self._disconnect = connect_events(
            self.native, [(viewer.layers.events.inserted, self._on_layers_changed),
                          (viewer.layers.events.removed, self._on_layers_changed)],
            on_teardown=self._teardown)
        self._cleanup_from_model()  # the shipped weights' clean-up is the first default
        fit_panel(self)

    # -- layers --------------------------------------------------------------------------
    def _stack_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """``(title, first channel layer)`` per MRI stack (:class:`StackComboBox`)."""
        return self.layer._stacks()

    def _on_layers_changed(self, event: Any = None) -> None:
        self.layer.reset_choices()
        forget_removed_layers(self, self._viewer, "labels_layer", "heatmap_layer")

    @property
    def closed(self) -> bool:
        """True once the widget was closed (or napari removed it)."""
        return self._closed

    def _teardown(self) -> None:
        """Stop any running segmentation and disconnect from the viewer's events (once)."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self._disconnect()
        stop_workers([self.worker])

    def close(self) -> None:
        """Stop any running segmentation and disconnect from the viewer's events."""
        self._teardown()
        super().close()

    # -- segmentation --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a segmentation worker is running."""
        return self.worker is not None

    def _on_segment(self) -> None:
        if self.running:
            return
        try:
            if self.layer.value is None:
                raise ValueError("no MRI stack: open one (an LGG folder, a TIFF stack, NIfTI)")
            image = stack_from_layers(channel_layers(list(self._viewer.layers), self.layer.value))
            source = self.picker.source()
        except ValueError as err:
            self._fail(err)
            return
        if self.picker.warning:
            warn(self.picker.warning)
        self._image, self._done, self._source, self._error = image, 0, source, None
        self._clear_results()  # the last result (maybe another patient's) never stays on show
        self.volume.value = ""
        self._cleanup_generation += 1  # a clean-up still running belongs to the last stack
        self._raw = np.zeros(image.shape[:3], np.uint8)
        self._written = np.zeros(image.shape[:3], np.uint8)
        self._edited = np.zeros(image.shape[:3], bool)
        self._stop = threading.Event()
        self.progress.max, self.progress.value = image.shape[0], 0
        self.status.value = f"Loading {source.model} ..."
        self.segment_button.enabled, self.cancel_button.enabled = False, True
        self.worker = start_worker(segment_stack, image, source,
                                   self.load_model, self._stop, self.planes_per_step,
                                   on_yield=self._on_yield,
                                   on_error=self._run_failed, on_finish=self._on_finish)

    def cancel(self) -> None:
        """Ask the running segmentation to stop (partial results stay)."""
        if self.worker is not None:
            self._stop.set()
            self.worker.quit()
            self.status.value = "Cancelling ..."

    def _on_yield(self, item: tuple) -> None:
        if self.closed:  # delivered after the widget went away
            return
        if item[0] == "model":
            self._show_layers(item[1])
            self.status.value = f"Segmenting {self._image.name} with {item[1].name} ..."
            return
        _, planes, labels, foreground = item
        self._raw[planes.start:planes.stop] = labels
        self._written[planes.start:planes.stop] = labels
        self._done = planes.stop
        self.progress.value = planes.stop
        for layer, values in ((self.labels_layer, labels), (self.heatmap_layer, foreground)):
            if layer is not None:
                layer.data[planes.start:planes.stop] = values
                layer.refresh()

    def _result_metadata(self, spec: ModelSpec | None) -> dict[str, Any]:
        meta = result_metadata(self._source if spec is not None else None, spec, TITLE)
        return {"neuroseg": {**meta, "modality": RESULT_MODALITY, "source": self._image.source}}

    def _clear_results(self) -> None:
        """Empty the result layers for the run that starts (over the new stack, no model yet).

        Until the model has loaded they show nothing, so a run that fails early leaves no
        earlier result (maybe another patient's) on screen as if it were this run's.
        """
        image = self._image
        for layer, dtype, suffix in ((self.labels_layer, np.uint8, "segmentation"),
                                     (self.heatmap_layer, np.float32, "probability")):
            if layer is None:
                continue
            layer.data = np.zeros(image.shape[:3], dtype)
            layer.scale, layer.translate = image.scale, image.translate
            layer.metadata = {**layer.metadata, **self._result_metadata(None)}
            layer.name = f"{image.name} {suffix}"

    def _show_layers(self, spec: ModelSpec) -> None:
        """Create (or reset) the labels and heatmap layers over the stack."""
        image = self._image
        geometry = {"scale": image.scale, "translate": image.translate,
                    "units": (image.unit,) * 3, "metadata": self._result_metadata(spec)}
        features = {"index": list(range(len(spec.classes))), "class": list(spec.classes)}
        labels = np.zeros(image.shape[:3], np.uint8)
        heat = np.zeros(image.shape[:3], np.float32)
        if self.labels_layer is None:
            self.labels_layer = self._viewer.add_labels(
                labels, name=f"{image.name} segmentation", colormap=class_colormap(spec),
                features=features, opacity=0.6, **geometry)
        else:
            self.labels_layer.data = labels
            self.labels_layer.colormap = class_colormap(spec)
            self.labels_layer.features = features
            self.labels_layer.scale, self.labels_layer.translate = image.scale, image.translate
            self.labels_layer.metadata = {**self.labels_layer.metadata, **geometry["metadata"]}
            self.labels_layer.name = f"{image.name} segmentation"
        if self.heatmap_layer is None:
            self.heatmap_layer = self._viewer.add_image(
                heat, name=f"{image.name} probability", colormap="inferno",
                contrast_limits=(0.0, 1.0), opacity=0.5, blending="additive", **geometry)
        else:
            self.heatmap_layer.data = heat
            self.heatmap_layer.contrast_limits = (0.0, 1.0)
            self.heatmap_layer.scale = image.scale
            self.heatmap_layer.translate = image.translate
            self.heatmap_layer.metadata = {**self.heatmap_layer.metadata,
                                           **geometry["metadata"]}
            self.heatmap_layer.name = f"{image.name} probability"

    def _on_finish(self) -> None:
        self.worker = None
        if self.closed:
            return
        self.segment_button.enabled, self.cancel_button.enabled = True, False
        depth = self._raw.shape[0] if self._raw is not None else 0
        if self._error is not None:
            self.status.value = self._run_text(depth)
        elif self._done == depth and depth:
            self.status.value = f"Segmented {depth} slices"
        elif self._stop.is_set():
            self.status.value = f"Cancelled after {self._done} of {depth} slices"
        if self._done:
            self.apply_cleanup()

    def _run_failed(self, err: BaseException) -> None:
        self._error = err
        self._fail(err)

    def _run_text(self, depth: int) -> str:
        """The status line of a finished run (what the result layers hold)."""
        if self._error is not None:
            shown = (f"partial result of {self._done} of {depth} slices shown" if self._done
                     else "no result")
            return f"Failed after {self._done} of {depth} slices ({shown}): {self._error}"
        if self._done == depth:
            return f"Segmented {depth} slices"
        return f"Partial result: {self._done} of {depth} slices"

    def _fail(self, err: BaseException) -> None:
        if self.closed:
            return
        report_error(err, "MRI")
        self.status.value = f"Failed: {err}"

    # -- clean-up and volume -------------------------------------------------------------
    def _on_size_unit(self, unit: str) -> None:
        self.min_size.step = 1.0 if unit == "voxels" else 0.01
        self.apply_cleanup()

    def _current_labels(self) -> np.ndarray:
        """The segmented slices as on screen, noting the voxels the user changed."""
        done, layer = self._done, self.labels_layer
        written = self._written[:done]
        if layer is None or tuple(layer.data.shape) != self._raw.shape:
            return written.copy()  # the layer was removed or replaced: the widget's own
        current = np.array(layer.data[:done], dtype=np.uint8, copy=True)
        self._edited[:done] |= current != written
        return current

    def _cleanup_from_model(self, _value: Any = None) -> None:
        """Take the clean-up saved with the chosen weights (``spec.extra["postprocess"]``,
        chosen by cross-validation for each shipped FLAIR model) as the options."""
        try:
            post = self.picker.source().spec().extra.get("postprocess") or {}
        except (ValueError, OSError):
            return  # no checkpoint chosen yet: keep the current options
        if "min_voxels" in post or "drop_single_slice" in post:
            self.size_unit.value = "voxels"
            self.min_size.value = float(post.get("min_voxels", 0))
            self.single_slice.value = bool(post.get("drop_single_slice", False))

    def apply_cleanup(self, *_: Any) -> None:
        """Re-apply the clean-up options to the current labels (in a worker).

        Voxels the user painted or erased keep the user's value; the rest is cleaned from
        the raw result. The change is written as one undo step.
        """
        if self.closed or self._raw is None or self._done == 0 or self.running:
            return
        self._cleanup_generation += 1
        generation = self._cleanup_generation
        current = self._current_labels()
        self.status.value = "Cleaning up ..."
        start_worker(cleanup_and_measure, self._raw[: self._done], min_size=self.min_size.value,
                     size_unit=self.size_unit.value, drop_single_slice=self.single_slice.value,
                     scale=self._image.scale, unit=self._image.unit, current=current,
                     edited=self._edited[: self._done].copy(),
                     on_done=lambda out: self._show_cleanup(generation, out, current),
                     on_error=self._fail)

    def _show_cleanup(self, generation: int, out: dict[str, Any],
                      before: np.ndarray | None = None) -> None:
        if self.closed or generation != self._cleanup_generation:
            return  # options changed again since: a newer result is on its way
        self.last_measure = out
        cleaned = out["cleanup"].labels
        layer = self.labels_layer
        if layer is not None and before is not None and tuple(layer.data.shape) == \
                self._raw.shape:
            try:
                write_labels(layer, before, cleaned)  # one undo step; later paint is kept
            except ValueError as err:
                self._fail(err)
                return
        self._written[: len(cleaned)] = cleaned
        self.volume.value = self.volume_text(out)
        depth = self._raw.shape[0]
        self.status.value = self._run_text(depth)

    def volume_text(self, out: dict[str, Any]) -> str:
        """The tumour volume line shown under the options."""
        image = self._image
        voxel_mm3 = voxel_volume_ml(image.scale, image.unit) * 1000.0
        cleanup = out["cleanup"]
        text = (f"Tumour volume: {out['ml']:.3f} ml ({out['voxels']} voxels of "
                f"{voxel_mm3:.3g} mm³)")
        if cleanup.n_small or cleanup.n_single_slice or out["min_voxels"] or \
                self.single_slice.value:
            text += (f"; before clean-up {out['raw_ml']:.3f} ml, kept {cleanup.n_kept} of "
                     f"{cleanup.n_components} components")
        if self._done < self._raw.shape[0]:
            text += f" (partial: {self._done} of {self._raw.shape[0]} slices)"
        if image.metadata.get("voxel_size") == "unknown":
            text += " (voxel size unknown: 1 mm assumed)"
        return text
