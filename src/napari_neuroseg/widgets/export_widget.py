"""The Export widget: corrected labels to a training dataset, and QuPath GeoJSON both ways.

Thin over :mod:`napari_neuroseg.annotate.export_plan`, ``annotate.export`` and
``annotate.geojson``: the GUI thread only copies the labels and reads the settings;
planning, validation, reading the image pixels, hashing the source and writing run in a
worker. A slide's labels are a
layer on the slide's working grid (an edit region, a result or a layer painted from
scratch) or, for a multiscale layer backed by a label store (``metadata["neuroseg"]
["label_store"]``), every committed region of the store.
"""

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

from napari_neuroseg.annotate.export import EXPORT_TASKS, ExportReport
from napari_neuroseg.annotate.geojson import ImportedLabels
from napari_neuroseg.annotate.layer_classes import export_task_of_metadata
from napari_neuroseg.dataset.manifest import DatasetError
from napari_neuroseg.dataset.tasks import CT_CLASSES, FIXED_CLASS_MAPS, NUCLEI_CLASSES
from napari_neuroseg.io.layers import image_layers
from napari_neuroseg.widgets._annotate_layers import labels_layers
from napari_neuroseg.widgets._export_geojson import GeoJSONExchange
from napari_neuroseg.widgets._export_job import (
    format_class_map,
    image_record,
    layer_class_map,
    parse_class_text,
    run_export,
)
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._workers import connect_events, report_error, start_worker

if TYPE_CHECKING:
    import napari

__all__ = ["ExportWidget", "format_class_map", "parse_class_text"]

TASK_OF_MODALITY = {"slide": "tissue", "MR": "mri", "CT": "ct"}


class ExportWidget(GeoJSONExchange, Container):
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
        return [(layer.name, layer) for layer in labels_layers(self._viewer)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in image_layers(self._viewer.layers)]

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
