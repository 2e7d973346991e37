"""The Annotate widget: paint corrections with a class palette, on any labels layer or slide.

- A class map (a standard one or a model's) colours the chosen labels layer, names its classes
  in the status bar, and "Paint class" selects the label to paint by name.
- "New annotation layer" makes a blank labels layer over the chosen image (a whole volume or
  image; for a multiscale slide, an edit region).
- Slides (:class:`~napari_neuroseg.widgets._annotate_slide.SlideEditor`): the view or a drawn
  rectangle becomes an editable region of a tile-sparse label store on disk, committed in a
  worker, autosaved, shown as a multiscale layer.
- Nuclei (:class:`~napari_neuroseg.widgets._annotate_instances.InstanceTools`): delete, merge,
  split and add instances.
- Keys, while the widget is open, on the chosen labels layer and the edit region: 1-9 paint
  class 1-9 of the class map, Shift-C commits the edit region. They take the place of
  napari's mode keys 1-7 on those layers only (E, P, F, L and Z still pick the modes).
"""

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QLabel, QSizePolicy

from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS, ClassMap
from napari_neuroseg.io.layers import image_from_layer, image_layers
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.widgets._annotate_instances import InstanceTools
from napari_neuroseg.widgets._annotate_layers import (
    apply_palette,
    class_map_of,
    labels_layers,
    own_class_map,
    palette_conflict,
)
from napari_neuroseg.widgets._annotate_slide import SlideEditor
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._workers import connect_events, report_error

if TYPE_CHECKING:
    import napari

MODEL_TASKS = ("semantic_segmentation", "instance_segmentation")
NARROW_FIELD = 60  # px a field may shrink to before its label does

CLASS_KEYS = tuple(str(k) for k in range(1, 10))  # key k paints class k
COMMIT_KEY = "Shift-C"
KEYS_HELP = (f"Keys on the labels layer: 1-9 paint class 1-9; {COMMIT_KEY} commits the edit "
             "region (napari's E, P, F, L, Z still pick the modes)")


def keep_labels_when_narrow(form: Container, texts: Iterable[Label]) -> None:
    """Let ``form`` narrow to about its longest label plus :data:`NARROW_FIELD` px, fields
    first: each field label keeps its whole text, fields shrink, and the ``texts`` (status
    lines) wrap instead of widening the dock.

    magicgui gives every field label a fixed width, but a dock narrower than the form's
    minimum squeezes labels and fields alike (the labels vanish first); long combo box
    items, spin box ranges and the empty label column of nested forms set that minimum.
    """
    wrapping = {id(text.native) for text in texts}
    for text in texts:
        text.native.setWordWrap(True)
        text.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    for label in form.native.findChildren(QLabel):
        if id(label) in wrapping:
            continue
        if not label.text():  # the label column of a nested form: no indent
            label.setVisible(False)
            continue
        label.setWordWrap(False)
        need = label.fontMetrics().horizontalAdvance(label.text()) + 4
        label.setMinimumWidth(max(need, label.minimumWidth()))  # aligned as magicgui set
    for combo in form.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(4)
    for spin in form.native.findChildren(QAbstractSpinBox):
        spin.setMinimumWidth(NARROW_FIELD)


def class_map_choices() -> dict[str, ClassMap]:
    """The standard class maps, then every segmentation model's (``model: <name>``)."""
    registry = ModelRegistry()
    maps = dict(STANDARD_CLASS_MAPS)
    for name in registry.names():
        spec = registry.get(name)
        if spec.task in MODEL_TASKS:
            maps[f"model: {name}"] = ClassMap.from_spec(spec)
    return maps


class AnnotateWidget(Container):
    """Correct labels: class palette, new annotation layers, slide edit regions, nuclei tools.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.maps = class_map_choices()
        self.labels = ComboBox(label="Labels layer", choices=self._labels_choices)
        self.class_map = ComboBox(label="Class map", choices=list(self.maps))
        self.paint_class = ComboBox(label="Paint class", choices=self._class_choices)
        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.new_button = PushButton(text="New annotation layer")
        self.status = Label(value="Choose a labels layer, or an image to annotate.")
        self.keys = Label(value=KEYS_HELP)
        self.slide = SlideEditor(viewer, lambda: self.image.value, self.current_class_map,
                                 self.say)
        self.instances = InstanceTools(viewer, lambda: self.labels.value, self.id_floor,
                                       self.say)
        self.paint_class.tooltip = "Keys 1-9 on the labels layer pick class 1-9"
        self.slide.commit_button.tooltip = f"{COMMIT_KEY} on the edit region"
        self.extend([self.labels, self.class_map, self.paint_class, self.image, self.new_button,
                     self.slide, self.instances, self.keys, self.status])
        self._keyed: dict[int, tuple[Any, dict[str, Any]]] = {}  # layer id: layer, overwritten
        self._torn_down = False
        self.slide.on_edit_layer = self._sync_keys
        for part in (self.slide, self.instances):
            part.margins = (0, 0, 0, 0)
        keep_labels_when_narrow(self, [self.keys, self.status])
        self.labels.changed.connect(self._on_labels_layer)
        self.labels.changed.connect(self._sync_keys)
        self.class_map.changed.connect(self._on_class_map)
        self.paint_class.changed.connect(self.select_class)
        self.new_button.changed.connect(self.new_layer)
        self._on_labels_layer(self.labels.value)  # a result docked under keeps its classes
        self._on_class_map()
        self._sync_keys()
        self._disconnect = connect_events(
            self.native, [(viewer.layers.events.inserted, self._on_layers_changed),
                          (viewer.layers.events.removed, self._on_layer_removed)],
            on_teardown=self._teardown)
        fit_panel(self, min_width=self.native.minimumWidth(), wrap_names=False)  # narrow form

    # -- choices ----------------------------------------------------------------------------
    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in labels_layers(self._viewer)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in image_layers(self._viewer.layers)]

    def _class_choices(self, _widget: Any = None) -> list[str]:
        maps = getattr(self, "maps", {})
        chosen = maps.get(getattr(getattr(self, "class_map", None), "value", None))
        return list(chosen.names) if chosen is not None else []

    def current_class_map(self) -> ClassMap:
        """The chosen class map."""
        return self.maps[self.class_map.value]

    def say(self, message: str) -> None:
        """Show a status line."""
        self.status.value = message

    def _on_layers_changed(self, _event: Any = None) -> None:
        for combo in (self.labels, self.image, self.slide.seed, self.instances.line_layer):
            combo.reset_choices()

    def _on_layer_removed(self, event: Any) -> None:
        self.slide.on_layer_removed(event.value)
        self._on_layers_changed()
        self._sync_keys()

    # -- keys -------------------------------------------------------------------------------
    def _sync_keys(self, *_: Any) -> None:
        """Keys on the chosen labels layer and the edit region, and on no other layer."""
        wanted = {} if self._torn_down else {
            id(layer): layer for layer in (self.labels.value, self.slide.edit_layer)
            if layer is not None and layer in self._viewer.layers}
        for key in [k for k in self._keyed if k not in wanted]:
            layer, overwritten = self._keyed.pop(key)
            for name, func in overwritten.items():
                layer.bind_key(name, func, overwrite=True)  # None: unbound
        for key, layer in wanted.items():
            if key not in self._keyed:
                overwritten = {name: layer.bind_key(name, partial(self._class_key, number),
                                                    overwrite=True)
                               for number, name in enumerate(CLASS_KEYS, start=1)}
                overwritten[COMMIT_KEY] = layer.bind_key(COMMIT_KEY, self._commit_key,
                                                         overwrite=True)
                self._keyed[key] = (layer, overwritten)

    def _class_key(self, number: int, layer: Any) -> None:
        """Key ``number`` on ``layer``: paint class ``number`` of the class map."""
        if self.labels.value is not layer:
            self.labels.value = layer  # the edit region: its store's class map
        cm = self.current_class_map()
        if number >= cm.n_classes:
            self.say(f"{cm.title or 'the class map'} has no class {number} "
                     f"(classes 1-{cm.n_classes - 1}: {', '.join(cm.names[1:])})")
            return
        name = cm.names[number]
        with self.paint_class.changed.blocked():
            self.paint_class.value = name
        self.select_class(name)
        if layer.mode not in ("paint", "fill", "polygon"):
            layer.mode = "paint"

    def _commit_key(self, _layer: Any) -> None:
        """The commit key: commit the slide's edit region."""
        self.slide.commit()

    # -- palette ----------------------------------------------------------------------------
    def _on_labels_layer(self, layer: Any = None) -> None:
        """A layer whose labels have classes selects them: a result its model's (a Nuclei
        result: nuclei instances), a store or edit region the store's, a painted layer the
        map it was painted with."""
        carried = own_class_map(layer) or class_map_of(layer)
        if carried is None:
            return
        for title, cm in self.maps.items():
            if cm.names == carried.names and cm.kind == carried.kind:
                self.class_map.value = title
                return
        title = carried.title or "from the layer"
        self.maps[title] = carried
        self.class_map.choices = list(self.maps)
        self.class_map.value = title

    def _on_class_map(self, _value: Any = None) -> None:
        cm = self.current_class_map()
        self.paint_class.reset_choices()
        if cm.resolution and self.slide.store is None:  # an open store keeps its µm/px
            self.slide.mpp.value = cm.resolution
        layer = self.labels.value
        if layer is not None and class_map_of(layer) != cm:
            conflict = palette_conflict(layer, cm)
            if conflict is not None:  # never recolour labels of other classes
                self.say(conflict)
                return
            apply_palette(layer, cm)

    def select_class(self, name: Any = None) -> None:
        """Set the labels layer's ``selected_label`` to the class named in "Paint class".

        For instance maps the next free id is selected (a new object).
        """
        layer, cm = self.labels.value, self.current_class_map()
        name = name if isinstance(name, str) else self.paint_class.value
        if layer is None or name is None:
            return
        try:
            if class_map_of(layer) != cm:
                conflict = palette_conflict(layer, cm)
                if conflict is not None:
                    raise ValueError(conflict)
                apply_palette(layer, cm)
            if cm.kind == "instance" and name != cm.names[0]:
                layer.selected_label = self.id_floor(layer)
            else:
                layer.selected_label = cm.id_of(name)
        except ValueError as err:
            report_error(err, "Annotate")
            return
        self.say(f"Painting {cm.label_name(int(layer.selected_label))} "
                 f"(label {layer.selected_label})")

    def id_floor(self, layer: Any) -> int:
        """The smallest id a new instance of ``layer`` may take.

        Above every id in the layer, and above every id of the label store when the layer is
        the slide editor's edit region (ids stay unique across the slide).
        """
        floor = 1
        if layer is self.slide.edit_layer and self.slide.store is not None:
            floor = self.slide.store.max_label + 1
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        if isinstance(data, np.ndarray):
            floor = max(floor, int(data.max(initial=0)) + 1)
        return floor

    # -- new layers -------------------------------------------------------------------------
    def new_layer(self) -> Any:
        """A blank labels layer with the chosen class map over the chosen image.

        A multiscale slide gets an edit region (of its label store) instead.
        """
        image_layer, cm = self.image.value, self.current_class_map()
        if image_layer is None:
            report_error(ValueError("choose an image layer to annotate"), "Annotate")
            return None
        if getattr(image_layer, "multiscale", False):
            self.slide.edit_region(seed=False)
            return None
        image = image_from_layer(image_layer)
        axes = image.axes.replace("c", "")
        shape = tuple(int(n) for n, a in zip(image.levels[0].shape, image.axes, strict=True)
                      if a != "c")
        layer = self._viewer.add_labels(
            np.zeros(shape, dtype=cm.dtype), name=f"{image_layer.name} annotations",
            scale=tuple(image_layer.scale[-len(axes):]),
            translate=tuple(image_layer.translate[-len(axes):]), opacity=0.6,
            metadata={"neuroseg": {"image": image_layer.name, "modality": image.modality,
                                   "source": image.source}})
        apply_palette(layer, cm)
        self.labels.value = layer
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        self.select_class(cm.names[1])
        return layer

    def _teardown(self) -> None:
        """Commit a pending edit region, unbind the keys, disconnect from the viewer (once)."""
        if self._torn_down:
            return
        self._torn_down = True
        self._sync_keys()
        self.slide.teardown()
        self._disconnect()

    def close(self) -> None:
        """Commit a pending edit region, unbind the keys and disconnect from the viewer."""
        self._teardown()
        super().close()
