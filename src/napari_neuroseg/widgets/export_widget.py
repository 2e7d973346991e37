"""The Export widget: corrected labels to a training dataset, and QuPath GeoJSON both ways.

Thin over :mod:`napari_neuroseg.annotate.export_plan`, ``annotate.export`` and
``annotate.geojson``: the GUI thread only copies the labels and reads the settings;
planning, validation, reading the image pixels, hashing the source and writing run in a
worker. A slide's labels are a
layer on the slide's working grid (an edit region, a result or a layer painted from
scratch) or, for a multiscale layer backed by a label store (``metadata["neuroseg"]
["label_store"]``), every committed region of the store.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from qtpy.QtCore import QTimer

from napari_neuroseg.annotate.export import EXPORT_TASKS, ExportReport, export_items
from napari_neuroseg.annotate.export_plan import (
    label_store_items,
    nuclei_tile_items,
    slide_items,
    slide_region,
    volume_items,
)
from napari_neuroseg.annotate.geojson import (
    ImportedLabels,
    geojson_to_labels,
    labels_to_geojson,
    write_geojson,
)
from napari_neuroseg.annotate.layer_classes import class_map_of_metadata, export_task_of_metadata
from napari_neuroseg.dataset.manifest import DatasetError, parse_class_map
from napari_neuroseg.dataset.tasks import CT_CLASSES, FIXED_CLASS_MAPS, NUCLEI_CLASSES
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import channel_layers, image_from_layer, stack_from_layers
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._workers import connect_events, report_error, start_worker

if TYPE_CHECKING:
    import napari

__all__ = ["ExportWidget", "format_class_map", "parse_class_text"]

TASK_OF_MODALITY = {"slide": "tissue", "MR": "mri", "CT": "ct"}
GEOJSON_MAX_SIDE = 4096  # importing without a labels layer: the finest level this small


def parse_class_text(text: str) -> dict[int, str]:
    """``"0: background, 1: tumour"`` (or bare names, ids 0, 1, ...) as a class map.

    Raises
    ------
    DatasetError
        If it is empty or malformed.
    """
    parts = [p.strip() for chunk in text.splitlines() for p in chunk.split(",") if p.strip()]
    if not parts:
        raise DatasetError("the class map is empty: give e.g. '0: background, 1: tumour'")
    out: dict[Any, str] = {}
    for k, part in enumerate(parts):
        key, name = part.split(":", 1) if ":" in part else (str(k), part)
        out[key.strip()] = name.strip()
    return parse_class_map(out, "class map")


def format_class_map(class_map: dict[int, str]) -> str:
    """The inverse of :func:`parse_class_text`."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(class_map.items()))


def layer_class_map(layer: Any) -> dict[int, str] | None:
    """Class names a labels layer carries: what made it (a result's model, a label store),
    else palette metadata, ``classes``, or its features."""
    if layer is None:
        return None
    meta = layer.metadata.get("neuroseg", {})
    own = class_map_of_metadata(meta)
    if own is not None:
        return NUCLEI_CLASSES if own.kind == "instance" else own.class_map()
    names = (meta.get("class_map") or {}).get("names") or meta.get("classes")
    if names:
        if (meta.get("class_map") or {}).get("kind") == "instance":
            return {0: str(names[0]), 1: str(names[-1])}
        return {k: str(n) for k, n in enumerate(names)}
    features = getattr(layer, "features", None)
    if features is not None and "class" in features and len(features):
        index = features["index"] if "index" in features else range(len(features))
        return {int(i): str(n) for i, n in zip(index, features["class"], strict=True)}
    return None


def image_record(layer: Any, layers: Any) -> LazyImage:
    """The :class:`LazyImage` of an image layer; an MR channel brings its sibling channels."""
    meta = layer.metadata.get("neuroseg", {})
    if meta.get("modality") == "MR" and layer.ndim == 3:
        stack = stack_from_layers(channel_layers(layers, layer))
        keep = ("patient_id", "files", "series_uid", "slice_numbers", "absent_slices")
        stack.metadata.update({k: meta[k] for k in keep if k in meta})
        return stack
    return image_from_layer(layer)


def run_export(image: LazyImage, labels: Any, scale: Any, translate: Any, task: str,
               class_map: dict[int, str], folder: str, options: dict[str, Any],
               on_progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Plan, validate and write (runs in a worker). ``labels`` may be a label store path."""
    ids = {"patient_id": options.get("patient_id") or None,
           "corrected_by_person": options.get("corrected", True)}
    if task in ("mri", "ct"):
        items = volume_items(image, task=task, labels=None if task == "ct" else labels,
                             slice_labels=options.get("slice_labels"),
                             patient_label=options.get("patient_label"),
                             series_id=options.get("slide_id") or None, **ids)
    elif isinstance(labels, str):
        from napari_neuroseg.annotate.labelstore import LabelStore

        items = label_store_items(image, LabelStore.open(labels), task=task,
                                  slide_id=options.get("slide_id") or None,
                                  patient_id=ids["patient_id"])
    else:
        region = slide_region(image, scale, translate)
        items = slide_items(image, labels, region, task="nuclei" if "nuclei" in task else task,
                            slide_id=options.get("slide_id") or None, **ids)
    if task == "nuclei-tiles":
        items = [t for item in items for t in nuclei_tile_items(item, options["tile_size"])]
    return export_items(items, folder, task, class_map, on_progress=on_progress)


class ExportWidget(Container):
    """Export corrected labels as training data; exchange slide labels with QuPath.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.labels_layer = ComboBox(label="Labels", choices=self._labels_choices)
        self.image_layer = ComboBox(label="Image", choices=self._image_choices)
        self.task = ComboBox(label="Task", choices=list(EXPORT_TASKS), value="tissue")
        self.classes = LineEdit(label="Classes", value="0: background, 1: class 1")
        self.folder = FileEdit(label="Dataset folder", mode="d")
        self.patient_id = LineEdit(label="Patient id")
        self.slide_id = LineEdit(label="Slide / series id")
        self.corrected = CheckBox(text="Corrected by a person", value=True)
        self.tile_size = SpinBox(label="Tile size", min=16, max=4096, value=256, visible=False)
        self.patient_label = ComboBox(label="Patient label", choices=self._ct_choices,
                                      visible=False)
        self.positive_slices = Select(label="Positive slices", choices=self._slice_choices,
                                      visible=False)
        self.export_button = PushButton(text="Export")
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.geojson_file = FileEdit(label="GeoJSON file", mode="w",
                                     filter="*.geojson *.json")
        self.geojson_export_button = PushButton(text="Export GeoJSON")
        self.geojson_import_button = PushButton(text="Import GeoJSON")
        self.status = Label(value="Choose a labels layer and a dataset folder.")
        self.extend([self.labels_layer, self.image_layer, self.task, self.classes, self.folder,
                     self.patient_id, self.slide_id, self.corrected, self.tile_size,
                     self.patient_label, self.positive_slices, self.export_button,
                     self.progress, self.geojson_file, self.geojson_export_button,
                     self.geojson_import_button, self.status])
        self.last_report: ExportReport | None = None
        self.last_import: ImportedLabels | None = None
        self.running = False
        self._done = 0
        self._poll = QTimer()
        self._poll.setInterval(100)
        self._poll.timeout.connect(self._show_progress)
        self.labels_layer.changed.connect(self._on_labels)
        self.image_layer.changed.connect(self._on_image)
        self.task.changed.connect(self._on_task)
        self.patient_label.changed.connect(self._on_patient_label)
        self.export_button.changed.connect(self.export)
        self.geojson_export_button.changed.connect(self.export_geojson)
        self.geojson_import_button.changed.connect(self.import_geojson)
        self._closed = False
        self._disconnect = connect_events(
            self.native, [(viewer.layers.events.inserted, self._on_layers_changed),
                          (viewer.layers.events.removed, self._on_layers_changed)],
            on_teardown=self._teardown)
        self._on_labels()
        fit_panel(self)

    # -- choices and prefills -----------------------------------------------------------------
    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer.__class__.__name__ == "Labels"]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer.__class__.__name__ == "Image"]

    def _ct_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        try:
            classes = parse_class_text(self.classes.value)
        except DatasetError:
            classes = CT_CLASSES
        return [(name, k) for k, name in classes.items()]

    def _slice_choices(self, _widget: Any = None) -> list[int]:
        image = self.image_layer.value if hasattr(self, "image_layer") else None
        if image is None or image.metadata.get("neuroseg", {}).get("modality") not in ("CT",
                                                                                      "MR"):
            return []
        return list(range(int(image.data.shape[0])))

    def _on_layers_changed(self, _event: Any = None) -> None:
        labels, image = self.labels_layer.value, self.image_layer.value
        self.labels_layer.reset_choices()
        self.image_layer.reset_choices()
        if self.labels_layer.value is not labels and self.labels_layer.value is not None:
            self._on_labels()
        elif self.image_layer.value is not image:
            self._on_image()

    def _matching_image(self, labels: Any) -> Any:
        """The image a labels layer belongs to: same source, else the same spatial extent."""
        images = [layer for _, layer in self._image_choices()]
        meta = labels.metadata.get("neuroseg", {})
        for layer in images:
            if meta.get("source") and layer.metadata.get("neuroseg", {}).get("source") == \
                    meta["source"] and layer.ndim == labels.ndim:
                return layer
        lo, hi = labels.extent.world
        for layer in images:
            if layer.ndim != labels.ndim:
                continue
            ilo, ihi = layer.extent.world
            if np.all(lo >= ilo - 1e-6) and np.all(hi <= ihi + 1e-6):
                return layer
        return images[0] if images else None

    def _on_labels(self, _value: Any = None) -> None:
        labels = self.labels_layer.value
        if labels is None:
            return
        image = self._matching_image(labels)
        if image is not None and self.image_layer.value is not image:
            self.image_layer.value = image
        self._on_image()
        own_task = export_task_of_metadata(labels.metadata.get("neuroseg", {}))
        if own_task is not None:  # a result or a store: what made it says
            if not (own_task == "nuclei" and self.task.value == "nuclei-tiles"):
                self.task.value = own_task
            self._on_task()
            return
        classes = layer_class_map(labels)
        if classes is not None and self.task.value not in ("mri", "ct", "nuclei-tiles"):
            self.classes.value = format_class_map(classes)
            if set(classes.values()) == set(NUCLEI_CLASSES.values()) or (
                    labels.metadata.get("neuroseg", {}).get("class_map") or {}
            ).get("kind") == "instance":
                self.task.value = "nuclei"

    def _on_image(self, _value: Any = None) -> None:
        image = self.image_layer.value
        if image is None:
            return
        meta = image.metadata.get("neuroseg", {})
        modality = meta.get("modality") or ("slide" if getattr(image, "rgb", False) else "MR")
        task = TASK_OF_MODALITY.get(modality)
        if task is not None and (modality != "slide" or self.task.value in ("mri", "ct")):
            self.task.value = task
        self.patient_id.value = str(meta.get("patient_id") or "")
        self.slide_id.value = str(meta.get("series_uid") or image.name)
        self.positive_slices.reset_choices()
        self._on_task()

    def _on_task(self, _value: Any = None) -> None:
        task = self.task.value
        if task in FIXED_CLASS_MAPS:
            self.classes.value = format_class_map(FIXED_CLASS_MAPS[task])
        elif task == "tissue":
            classes = layer_class_map(self.labels_layer.value)
            if classes is not None:
                self.classes.value = format_class_map(classes)
        self.tile_size.visible = task == "nuclei-tiles"
        self.patient_label.visible = self.positive_slices.visible = task == "ct"
        self.patient_label.reset_choices()
        for widget in (self.geojson_file, self.geojson_export_button,
                       self.geojson_import_button):
            widget.visible = task in ("tissue", "nuclei", "nuclei-tiles")

    def _on_patient_label(self, value: Any = None) -> None:
        """Slice labels default to the patient's: all slices when positive, none otherwise."""
        self.positive_slices.value = list(self.positive_slices.choices) if value else []

    # -- export -------------------------------------------------------------------------------
    def _labels_data(self) -> tuple[Any, Any, Any]:
        layer = self.labels_layer.value
        if layer is None:
            raise ValueError("no labels layer: paint or import labels first")
        store = layer.metadata.get("neuroseg", {}).get("label_store")
        if getattr(layer, "multiscale", False):
            if store:
                return str(store), layer.scale, layer.translate
            raise ValueError(f"{layer.name} is multiscale: edit a region (Annotate widget) "
                             "and export that, or export its label store")
        return np.array(layer.data, copy=True), layer.scale, layer.translate

    def export(self) -> None:
        """Export the labels (in a worker); the status says how many items were added."""
        if self.running:
            return
        try:
            if self.image_layer.value is None:
                raise ValueError("no image layer: the labels need the image they belong to")
            folder = str(self.folder.value)
            if not folder or folder == ".":
                raise ValueError("choose a dataset folder")
            image = image_record(self.image_layer.value, self._viewer.layers)
            task = self.task.value
            self._check_task(task)
            labels, scale, translate = (None, None, None) if task == "ct" else \
                self._labels_data()
            options = {"patient_id": self.patient_id.value, "slide_id": self.slide_id.value,
                       "corrected": self.corrected.value, "tile_size": self.tile_size.value}
            if task == "ct":
                chosen = set(self.positive_slices.value)
                options["patient_label"] = self.patient_label.value
                options["slice_labels"] = [int(k in chosen) for k in
                                           range(len(self.positive_slices.choices))]
            classes = parse_class_text(self.classes.value)
        except ValueError as err:
            self._fail(err)
            return
        self.running = True
        self.export_button.enabled = False
        self.progress.value = 0
        self.status.value = "Exporting ..."
        self._done = 0
        self._poll.start()
        start_worker(run_export, image, labels, scale, translate, task, classes, folder,
                     options, on_done=self._exported, on_error=self._fail,
                     on_finish=self._finished, on_progress=self._progress)

    def _check_task(self, task: str) -> None:
        """Instance labels (a Nuclei result) export only as nuclei or nuclei tiles."""
        layer = self.labels_layer.value
        if layer is None or task == "ct":
            return
        own = export_task_of_metadata(layer.metadata.get("neuroseg", {}))
        if own == "nuclei" and task not in ("nuclei", "nuclei-tiles"):
            raise ValueError(f"{layer.name} holds nucleus instances (each id is one nucleus, "
                             f"not a class): export it as 'nuclei' or 'nuclei-tiles', "
                             f"not {task!r}")

    def _progress(self, done: int, total: int) -> None:
        # called in the worker thread: only store a number; the GUI timer shows it
        self._done = round(100 * done / max(1, total))

    def _show_progress(self) -> None:
        self.progress.value = self._done

    def _exported(self, report: ExportReport) -> None:
        self.last_report = report
        self.progress.value = 100
        self.status.value = (f"{report.added} item(s) added, {report.replaced} replaced in "
                             f"{report.path}")

    def _finished(self) -> None:
        self._poll.stop()
        self.running = False
        self.export_button.enabled = True

    def _fail(self, err: BaseException) -> None:
        report_error(err, "Export")
        self.status.value = f"Failed: {err}"

    # -- GeoJSON ------------------------------------------------------------------------------
    def export_geojson(self) -> None:
        """Write the labels layer as QuPath GeoJSON (level-0 pixel coordinates)."""
        try:
            layer, path = self.labels_layer.value, str(self.geojson_file.value)
            if layer is None or self.image_layer.value is None:
                raise ValueError("choose the labels layer and the slide it belongs to")
            if not path or path == ".":
                raise ValueError("choose a GeoJSON file to write")
            labels, _, _ = self._labels_data()
            if isinstance(labels, str):
                raise ValueError("GeoJSON export works on a labels layer, not a label store")
            region = slide_region(image_from_layer(self.image_layer.value), layer.scale,
                                  layer.translate)
            downsample, offset = region.downsample, region.offset
            classes = parse_class_text(self.classes.value)
            instances = self.task.value in ("nuclei", "nuclei-tiles")
            colors = {k: tuple(layer.get_color(k)[:3]) for k in classes
                      if k and layer.get_color(k) is not None}
        except ValueError as err:
            self._fail(err)
            return

        def work() -> Path:
            data = labels_to_geojson(labels, classes, offset=offset, downsample=downsample,
                                     instances=instances, colors=colors)
            return write_geojson(path, data)

        self.status.value = "Writing GeoJSON ..."
        start_worker(work, on_done=lambda p: setattr(self.status, "value", f"Wrote {p}"),
                     on_error=self._fail)

    def import_geojson(self) -> None:
        """Rasterise a QuPath GeoJSON file into a new labels layer (unknown classes added)."""
        try:
            path = str(self.geojson_file.value)
            if not Path(path).is_file():
                raise ValueError(f"{path}: choose an existing GeoJSON file")
            if self.image_layer.value is None:
                raise ValueError("choose the slide the annotations belong to")
            image = image_from_layer(self.image_layer.value)
            layer = self.labels_layer.value
            if layer is not None and not getattr(layer, "multiscale", False):
                shape = layer.data.shape[-2:]
                scale, translate = tuple(layer.scale), tuple(layer.translate)
            else:
                shape, scale, translate = _level_grid(image)
            region = slide_region(image, scale, translate)
            classes = parse_class_text(self.classes.value)
            instances = self.task.value in ("nuclei", "nuclei-tiles")
        except ValueError as err:
            self._fail(err)
            return

        def work() -> ImportedLabels:
            return geojson_to_labels(path, shape, classes, offset=region.offset,
                                     downsample=region.downsample, instances=instances,
                                     unknown="add")

        def done(result: ImportedLabels) -> None:
            self.last_import = result
            names = list(result.class_map.values())
            new = self._viewer.add_labels(
                result.labels, name=f"{Path(path).stem} (GeoJSON)", scale=scale,
                translate=translate, opacity=0.5,
                features=None if instances else {"index": list(result.class_map),
                                                 "class": names},
                metadata={"neuroseg": {"classes": names, "source": image.source}})
            self.labels_layer.value = new
            if result.added:
                self.classes.value = format_class_map(result.class_map)
            self.status.value = (f"Imported {result.features} feature(s)"
                                 + (f", skipped {result.skipped}" if result.skipped else "")
                                 + (f"; new classes {result.added}" if result.added else ""))

        self.status.value = "Reading GeoJSON ..."
        start_worker(work, on_done=done, on_error=self._fail)

    def _teardown(self) -> None:
        """Stop polling and disconnect from the viewer's events (once; also when napari
        removes the dock or the viewer closes)."""
        if self._closed:
            return
        self._closed = True
        self._poll.stop()
        self._disconnect()

    def close(self) -> None:
        """Disconnect from the viewer's events."""
        self._teardown()
        super().close()


def _level_grid(image: LazyImage) -> tuple[tuple[int, int], tuple[float, float],
                                           tuple[float, float]]:
    """Shape, scale and translate of the finest level with both sides <= GEOJSON_MAX_SIDE."""
    downsamples = image.downsamples()
    for level, array in enumerate(image.levels):
        if max(array.shape[:2]) <= GEOJSON_MAX_SIDE or level == len(image.levels) - 1:
            base = float(image.scale[-1])
            mpp = base * downsamples[level]
            t0 = tuple(image.translate or (0.0, 0.0))[-2:]
            shift = (mpp - base) / 2
            return ((int(array.shape[0]), int(array.shape[1])), (mpp, mpp),
                    (t0[0] + shift, t0[1] + shift))
    raise ValueError("the slide has no levels")
