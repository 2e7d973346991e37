"""Instance tools of the Annotate widget: delete, merge, split and add nuclei.

Each button runs one function of :mod:`napari_neuroseg.annotate.instances` in a worker on
a copy of the chosen 2-D labels layer and writes the change back as one undo step
(:func:`~napari_neuroseg.widgets._undoable.write_labels`): Ctrl+Z undoes it like a paint
stroke, the paint history is kept, and it counts as a paint stroke for the autosave of an
edit region.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, LineEdit, PushButton

from napari_neuroseg.annotate import instances as ops
from napari_neuroseg.widgets._annotate_layers import shapes_layers
from napari_neuroseg.widgets._undoable import write_labels
from napari_neuroseg.widgets._workers import report_error, start_worker


def parse_ids(text: str) -> list[int]:
    """``"3, 7 9"`` -> ``[3, 7, 9]`` (ValueError naming what is not a number)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"instance ids must be whole numbers, got {text!r}") from None


class InstanceTools(Container):
    """Delete / merge / split / add instances of a labels layer (part of the Annotate widget).

    Parameters
    ----------
    viewer : napari.Viewer
    target : callable
        Returns the labels layer to edit.
    id_floor : callable
        ``id_floor(layer)``: the smallest id a new instance may take (above every id of a
        label store the layer is a region of).
    say : callable
        Shows a status line.
    """

    def __init__(self, viewer: Any, target: Callable[[], Any],
                 id_floor: Callable[[Any], int], say: Callable[[str], None]) -> None:
        super().__init__(labels=True)
        self._viewer, self._target, self._id_floor, self._say = viewer, target, id_floor, say
        self.ids = LineEdit(label="Instance ids", value="")
        self.line_layer = ComboBox(label="Split line", choices=self._line_choices)
        self.delete_button = PushButton(text="Delete")
        self.merge_button = PushButton(text="Merge")
        self.split_line_button = PushButton(text="Split along line")
        self.split_watershed_button = PushButton(text="Split (watershed)")
        self.add_button = PushButton(text="Add new instance")
        self.relabel_button = PushButton(text="Relabel 1..n")
        self.extend([self.ids, self.line_layer, self.delete_button, self.merge_button,
                     self.split_line_button, self.split_watershed_button, self.add_button,
                     self.relabel_button])
        self.delete_button.changed.connect(self.delete)
        self.merge_button.changed.connect(self.merge)
        self.split_line_button.changed.connect(self.split_line)
        self.split_watershed_button.changed.connect(self.split_watershed)
        self.add_button.changed.connect(self.add)
        self.relabel_button.changed.connect(self.relabel)

    def _line_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in shapes_layers(self._viewer)]

    # -- inputs -----------------------------------------------------------------------------
    def _layer(self) -> Any:
        layer = self._target()
        if layer is None:
            raise ValueError("choose a labels layer")
        if getattr(layer, "multiscale", False) or layer.data.ndim != 2:
            raise ValueError(f"{layer.name}: instance tools edit 2-D labels (for a slide, open "
                             "an edit region)")
        return layer

    def chosen_ids(self, layer: Any) -> list[int]:
        """The ids typed in, else the layer's selected label."""
        ids = parse_ids(self.ids.value)
        return ids or [int(layer.selected_label)]

    def line_points(self, layer: Any) -> np.ndarray:
        """The selected (else last) line or path of the line layer, in ``layer``'s pixels."""
        shapes = self.line_layer.value
        if shapes is None or not len(shapes.data):
            raise ValueError("draw a line (a Shapes layer's line or path) across the instance")
        index = sorted(shapes.selected_data)[-1] if shapes.selected_data else len(shapes.data) - 1
        world = [shapes.data_to_world(p) for p in shapes.data[index]]
        return np.array([layer.world_to_data(p)[-2:] for p in world], dtype=float)

    # -- operations -------------------------------------------------------------------------
    def _run(self, name: str, func: Callable[..., Any], *args: Any) -> None:
        try:
            layer = self._layer()
            call_args = [a(layer) if callable(a) else a for a in args]
        except ValueError as err:
            report_error(err, "Instances")
            return

        before = np.array(layer.data, copy=True)  # the worker's input; the user may paint on

        def done(result: Any) -> None:
            labels, message = result
            try:
                written = 0 if labels is None else write_labels(layer, before, labels)
            except ValueError as err:
                report_error(err, "Instances")
                return
            self._say(f"{message} (Ctrl+Z undoes it)" if written else message)

        self._say(f"{name} ...")
        start_worker(func, before, *call_args, on_done=done,
                     on_error=lambda err: report_error(err, "Instances"))

    def delete(self) -> None:
        """Delete the chosen instances."""
        self._run("Deleting", lambda data, ids: (ops.delete_instances(data, ids),
                                                 f"Deleted {ids}"), self.chosen_ids)

    def merge(self) -> None:
        """Merge the chosen instances (two or more) into the smallest id."""
        self._run("Merging", lambda data, ids: (ops.merge_instances(data, ids),
                                                f"Merged {ids} into {min(ids)}"),
                  self.chosen_ids)

    def split_line(self) -> None:
        """Split the instance the drawn line crosses (or the chosen id) along the line."""

        def split(data: np.ndarray, ids: list[int], points: np.ndarray, floor: int) -> Any:
            target = int(ids[0]) if parse_ids(self.ids.value) else ops.instance_on_line(
                data, points)
            if target == 0:
                raise ValueError("the line crosses no instance")
            out, new = ops.split_instance_along_line(data, target, points,
                                                     max(floor, ops.next_id(data)))
            return out, f"Split {target} into {target} and {new}"

        self._run("Splitting", split, self.chosen_ids, self.line_points, self._id_floor)

    def split_watershed(self) -> None:
        """Split the chosen instance in two by watershed."""

        def split(data: np.ndarray, ids: list[int], floor: int) -> Any:
            out, new = ops.split_instance_watershed(data, ids[0], max(floor, ops.next_id(data)))
            return out, f"Split {ids[0]} into {ids[0]} and {new}"

        self._run("Splitting", split, self.chosen_ids, self._id_floor)

    def add(self) -> None:
        """Select the next free id for painting a new instance."""
        try:
            layer = self._layer()
        except ValueError as err:
            report_error(err, "Instances")
            return
        floor = self._id_floor(layer)

        def select(new: int) -> None:
            layer.selected_label = new
            layer.mode = "paint"
            self._viewer.layers.selection.active = layer
            self._say(f"Paint the new instance: label {new}")

        start_worker(lambda data: max(floor, ops.next_id(data)), layer.data, on_done=select,
                     on_error=lambda err: report_error(err, "Instances"))

    def relabel(self) -> None:
        """Renumber the instances 1..n."""
        self._run("Relabelling", lambda data: (ops.relabel_compact(data)[0],
                                               "Instances renumbered 1..n"))
