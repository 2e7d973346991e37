"""The MRI widget: per-slice FLAIR segmentation of a whole stack, 3-D clean-up, tumour volume.

Pick an MRI stack (one channel of a Kaggle LGG patient opened by this plugin: its sibling
channel layers are stacked back in file order; a TIFF stack; a NIfTI volume), a model and a
device, and press "Segment stack". The stack is segmented slice by slice in a background
worker; results fill in a labels layer (class names and colours from the model spec) and a
probability heatmap, both aligned with the stack. The optional 3-D connected-component
clean-up and the tumour volume in ml are recomputed in a worker from the stored raw result
whenever their options change.
"""

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dask.array as da
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
from napari.utils.colormaps import DirectLabelColormap

from napari_neuroseg.analysis import segment_volume
from napari_neuroseg.analysis.cleanup import (
    clean_labels,
    min_voxels_for_volume,
    volume_ml,
    voxel_volume_ml,
)
from napari_neuroseg.batch.tasks import ModelSource
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.widgets._common import (
    ModelPicker,
    forget_removed_layers,
    image_layers,
    report_error,
    start_worker,
    warn,
)

if TYPE_CHECKING:
    import napari

MRI_MODELS = ("mri-flair-unet", "mri-flair-transunet")
RESULT_MODALITY = "result"  # marks the widget's own layers so they are not offered as input


def channel_layers(layers: Sequence[Any], layer: Any) -> list[Any]:
    """``layer`` and its sibling channels when a reader split a multi-channel stack.

    A Kaggle LGG patient or a multi-channel TIFF opened by this plugin becomes one image layer
    per channel (napari's ``channel_axis``); their metadata still says ``"zyxc"``. The
    siblings share the source and patient and are returned in file channel order.
    """
    meta = layer.metadata.get("neuroseg", {})
    axes = str(meta.get("axes") or "")
    if "c" not in axes or layer.ndim != len(axes) - 1:
        return [layer]
    keys = ("source", "patient_id", "axes")

    def key(other: Any) -> tuple:
        return tuple(other.metadata.get("neuroseg", {}).get(k) for k in keys)

    group = [other for other in layers
             if other.__class__.__name__ == "Image" and other.data.shape == layer.data.shape
             and key(other) == key(layer)]
    names = list(meta.get("channels") or [])
    if names:
        def order(other: Any) -> int:
            hits = [i for i, n in enumerate(names) if other.name.endswith(f" {n}")]
            return hits[0] if hits else len(names)
        group.sort(key=order)
    return group


def stack_from_layers(layers: Sequence[Any]) -> LazyImage:
    """One ``"zyx"`` (one layer) or ``"zyxc"`` (one layer per channel) record, lazily stacked.

    Scale, translate and unit come from the first layer (the channels share them).
    """
    first = layers[0]
    if first.ndim != 3 or getattr(first, "rgb", False) or getattr(first, "multiscale", False):
        raise ValueError(f"{first.name}: expected a 3-D (z, y, x) stack, got "
                         f"{first.ndim}-D data")
    arrays = [layer.data if isinstance(layer.data, da.Array)
              else da.from_array(np.asarray(layer.data), chunks=(1, *layer.data.shape[1:]))
              for layer in layers]
    data = arrays[0] if len(arrays) == 1 else da.stack(arrays, axis=-1)
    meta = first.metadata.get("neuroseg", {})
    return LazyImage(
        levels=[data], axes="zyx" if len(arrays) == 1 else "zyxc",
        scale=tuple(float(s) for s in first.scale), unit=str(meta.get("unit") or "mm"),
        name=stack_name(layers), modality="MR", source=str(meta.get("source") or first.name),
        translate=tuple(float(t) for t in first.translate),
        metadata={"voxel_size": meta.get("voxel_size", "known"),
                  "channels": [layer.name for layer in layers]},
    )


def stack_name(layers: Sequence[Any]) -> str:
    """The name the layers share (an LGG patient id), else the first layer's name."""
    if len(layers) == 1:
        return str(layers[0].name)
    prefix = str(layers[0].name)
    for layer in layers[1:]:
        while not str(layer.name).startswith(prefix):
            prefix = prefix[:-1]
    return prefix.strip(" _-") or str(layers[0].name)


def load_model(source: ModelSource) -> tuple[Callable[[np.ndarray], np.ndarray], ModelSpec]:
    """The predictor and spec of ``source`` (run in the worker: it builds the network)."""
    return source.runner(), source.spec()


def segment_stack(image: LazyImage, source: ModelSource, load: Callable[..., Any],
                  stop: threading.Event, planes_per_step: int = 4) -> Iterator[tuple]:
    """Load the model, then segment the stack a few planes at a time (a generator worker).

    Yields ``("model", spec)`` once, then ``("planes", range, labels, foreground)`` per step
    (``foreground``: the summed probability of the non-background classes). Ends early, without
    yielding an unfinished step, when ``stop`` is set.
    """
    predictor, spec = load(source)
    yield ("model", spec)
    depth = image.shape[0]
    for z0 in range(0, depth, planes_per_step):
        if stop.is_set():
            return
        planes = range(z0, min(z0 + planes_per_step, depth))
        result = segment_volume(image, predictor, spec, planes=planes,
                                batch_size=planes_per_step, should_stop=stop.is_set)
        if not result.complete:
            return
        probabilities = np.asarray(result.probabilities, dtype=np.float32)
        yield ("planes", planes, np.asarray(result.labels), probabilities[1:].sum(axis=0))


def cleanup_and_measure(raw: np.ndarray, *, min_size: float, size_unit: str,
                        drop_single_slice: bool, scale: Sequence[float],
                        unit: str) -> dict[str, Any]:
    """Clean ``raw`` and measure it (run in a worker; pure)."""
    min_voxels = (round(min_size) if size_unit == "voxels"
                  else min_voxels_for_volume(min_size, scale, unit))
    result = clean_labels(raw, min_voxels=min_voxels, drop_single_slice=drop_single_slice)
    return {"cleanup": result, "min_voxels": min_voxels,
            "raw_ml": volume_ml(raw, scale, unit), "ml": volume_ml(result.labels, scale, unit),
            "voxels": int(np.count_nonzero(result.labels))}


def labels_colormap(spec: ModelSpec) -> DirectLabelColormap:
    """The spec's class colours (background transparent)."""
    colors: dict[Any, Any] = {i: c for i, c in enumerate(spec.colors)}
    colors[0] = "transparent"
    colors[None] = "transparent"
    return DirectLabelColormap(color_dict=colors)


def _disconnector(events: list[Any], callback: Callable[..., Any]) -> Callable[..., None]:
    """Disconnects ``callback`` from ``events`` once (holds no widget: runs at Qt teardown)."""

    def disconnect(*_: Any) -> None:
        while events:
            events.pop().disconnect(callback)

    return disconnect


class MRIWidget(Container):
    """Segment an MRI stack slice by slice, clean it up in 3-D, and measure the tumour.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose MR stacks are offered and where the results are added.

    Attributes
    ----------
    load_model : callable
        ``ModelSource -> (predictor, spec)``, called in the worker (:func:`load_model`; tests
        swap in a stand-in model).
    planes_per_step : int
        Planes segmented between two progress updates (and Cancel checks).
    labels_layer, heatmap_layer : napari layers or None
        The results, once a segmentation started.
    last_measure : dict or None
        The latest clean-up and volume (:func:`cleanup_and_measure`).
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.load_model: Callable[[ModelSource], Any] = load_model
        self.planes_per_step = 4
        self.layer = ComboBox(label="MRI stack", choices=self._stack_choices)
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
        self._done = 0
        self.labels_layer: Any = None
        self.heatmap_layer: Any = None
        self._cleanup_generation = 0
        self.last_measure: dict[str, Any] | None = None
        self.segment_button.changed.connect(self._on_segment)
        self.cancel_button.changed.connect(self.cancel)
        self.min_size.changed.connect(self.apply_cleanup)
        self.single_slice.changed.connect(self.apply_cleanup)
        self.size_unit.changed.connect(self._on_size_unit)
        self._events = [viewer.layers.events.inserted, viewer.layers.events.removed]
        for event in self._events:
            event.connect(self._on_layers_changed)
        self.native.destroyed.connect(_disconnector(self._events, self._on_layers_changed))
        self._alive = {"alive": True}  # a dict, so the teardown hook holds no widget
        alive = self._alive
        self.native.destroyed.connect(lambda *_: alive.update(alive=False))

    # -- layers --------------------------------------------------------------------------
    def _stack_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = [layer for layer in image_layers(self._viewer, ("MR",)) if layer.ndim == 3]
        return [(layer.name, layer) for layer in layers]

    def _on_layers_changed(self, event: Any = None) -> None:
        self.layer.reset_choices()
        forget_removed_layers(self, self._viewer, "labels_layer", "heatmap_layer")

    def _disconnect(self) -> None:
        _disconnector(self._events, self._on_layers_changed)()

    @property
    def closed(self) -> bool:
        """True once the widget was closed or its Qt widget destroyed."""
        return not self._alive["alive"]

    def close(self) -> None:
        """Stop any running segmentation and disconnect from the viewer's events."""
        self._alive["alive"] = False
        self.cancel()
        self._disconnect()
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
        self._image, self._done = image, 0
        self._cleanup_generation += 1  # a clean-up still running belongs to the last stack
        self._raw = np.zeros(image.shape[:3], np.uint8)
        self._stop = threading.Event()
        self.progress.max, self.progress.value = image.shape[0], 0
        self.status.value = f"Loading {source.model} ..."
        self.segment_button.enabled, self.cancel_button.enabled = False, True
        self.worker = start_worker(segment_stack, image, source, self.load_model, self._stop,
                                   self.planes_per_step, on_yield=self._on_yield,
                                   on_error=self._fail, on_finish=self._on_finish)

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
        self._done = planes.stop
        self.progress.value = planes.stop
        for layer, values in ((self.labels_layer, labels), (self.heatmap_layer, foreground)):
            if layer is not None:
                layer.data[planes.start:planes.stop] = values
                layer.refresh()

    def _show_layers(self, spec: ModelSpec) -> None:
        """Create (or reset) the labels and heatmap layers over the stack."""
        image = self._image
        geometry = {"scale": image.scale, "translate": image.translate,
                    "units": (image.unit,) * 3,
                    "metadata": {"neuroseg": {"modality": RESULT_MODALITY, "model": spec.name,
                                              "source": image.source}}}
        features = {"index": list(range(len(spec.classes))), "class": list(spec.classes)}
        labels = np.zeros(image.shape[:3], np.uint8)
        heat = np.zeros(image.shape[:3], np.float32)
        if self.labels_layer is None:
            self.labels_layer = self._viewer.add_labels(
                labels, name=f"{image.name} segmentation", colormap=labels_colormap(spec),
                features=features, opacity=0.6, **geometry)
        else:
            self.labels_layer.data = labels
            self.labels_layer.colormap = labels_colormap(spec)
            self.labels_layer.features = features
            self.labels_layer.scale, self.labels_layer.translate = image.scale, image.translate
        if self.heatmap_layer is None:
            self.heatmap_layer = self._viewer.add_image(
                heat, name=f"{image.name} probability", colormap="inferno",
                contrast_limits=(0.0, 1.0), opacity=0.5, blending="additive", **geometry)
        else:
            self.heatmap_layer.data = heat
            self.heatmap_layer.contrast_limits = (0.0, 1.0)
            self.heatmap_layer.scale = image.scale
            self.heatmap_layer.translate = image.translate

    def _on_finish(self) -> None:
        self.worker = None
        if self.closed:
            return
        self.segment_button.enabled, self.cancel_button.enabled = True, False
        depth = self._raw.shape[0] if self._raw is not None else 0
        if self._done == depth and depth:
            self.status.value = f"Segmented {depth} slices"
        elif self._stop.is_set():
            self.status.value = f"Cancelled after {self._done} of {depth} slices"
        if self._done:
            self.apply_cleanup()

    def _fail(self, err: BaseException) -> None:
        if self.closed:
            return
        report_error(err, "MRI")
        self.status.value = f"Failed: {err}"

    # -- clean-up and volume -------------------------------------------------------------
    def _on_size_unit(self, unit: str) -> None:
        self.min_size.step = 1.0 if unit == "voxels" else 0.01
        self.apply_cleanup()

    def apply_cleanup(self, *_: Any) -> None:
        """Re-apply the clean-up options to the stored raw result (in a worker)."""
        if self.closed or self._raw is None or self._done == 0 or self.running:
            return
        self._cleanup_generation += 1
        generation = self._cleanup_generation
        self.status.value = "Cleaning up ..."
        start_worker(cleanup_and_measure, self._raw[: self._done], min_size=self.min_size.value,
                     size_unit=self.size_unit.value, drop_single_slice=self.single_slice.value,
                     scale=self._image.scale, unit=self._image.unit,
                     on_done=lambda out: self._show_cleanup(generation, out),
                     on_error=self._fail)

    def _show_cleanup(self, generation: int, out: dict[str, Any]) -> None:
        if self.closed or generation != self._cleanup_generation:
            return  # options changed again since: a newer result is on its way
        self.last_measure = out
        cleaned = out["cleanup"].labels
        if self.labels_layer is not None:
            self.labels_layer.data[: len(cleaned)] = cleaned
            self.labels_layer.refresh()
        self.volume.value = self.volume_text(out)
        depth = self._raw.shape[0]
        self.status.value = (f"Segmented {depth} slices" if self._done == depth
                             else f"Partial result: {self._done} of {depth} slices")

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
