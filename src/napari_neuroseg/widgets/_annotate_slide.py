"""Edit regions of a slide: a painted labels layer written back to a :class:`LabelStore`.

napari cannot paint multiscale labels, so the region on screen (or a drawn rectangle) becomes
an ordinary 2-D labels layer on the store's working grid, seeded from the store (and, where
nothing was committed, from a chosen result layer). Commits run in a worker and refresh a
read-only multiscale layer backed by the store. Autosave commits a debounced moment after
each paint stroke or plugin edit, and after an undo or redo (napari's Ctrl+Z sends no paint
event, only a refresh: the labels are compared with the last commit), and synchronously when
the edit layer is removed, the widget closes or the application quits, so closing napari
never loses an edit.
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_neuroseg.annotate.labelstore import LabelStore
from napari_neuroseg.annotate.palette import ClassMap
from napari_neuroseg.annotate.region_edit import RegionEdit
from napari_neuroseg.annotate.slidegrid import (
    default_store_path,
    resample_labels,
    slide_grid,
    slide_identity,
)
from napari_neuroseg.engine import Region
from napari_neuroseg.io.layers import image_from_layer
from napari_neuroseg.live.viewport import Box, box_to_pixels, visible_box
from napari_neuroseg.widgets._annotate_layers import apply_palette, labels_layers, layer_level0
from napari_neuroseg.widgets._workers import report_error, start_worker

AUTOSAVE_MS = 1500
MAX_SIDE = 4096
NO_SEED = "(none)"


def open_store(slide: Any, class_map: ClassMap, mpp: float, folder: str) -> LabelStore:
    """The store of ``slide`` (a layer) for a class map and µm/px (runs in a worker)."""
    image = image_from_layer(slide)
    grid = slide_grid(image, mpp)
    identity = slide_identity(image.source)
    path = Path(folder) if folder else default_store_path(image.source, class_map, grid.mpp,
                                                          identity=identity)
    return LabelStore.open_or_create(
        path, grid.shape, class_map, scale=grid.scale, translate=grid.translate,
        level=grid.level, mpp=grid.mpp,
        source={"path": str(image.source), "identity": identity, "sha256": None})


def load_region(store: LabelStore, box: Box, seed: Callable[[LabelStore], Any] | None
                ) -> tuple[Region, np.ndarray]:
    """The store pixels under ``box`` and their labels, seeded (runs in a worker)."""
    region = box_to_pixels(box, store.scale, store.translate, store.shape)
    if region is None:
        raise ValueError("the view (or rectangle) is outside the slide")
    if max(region.shape) > MAX_SIDE:
        raise ValueError(f"the region is {region.shape[0]} x {region.shape[1]} working pixels; "
                         f"zoom in or draw a smaller rectangle (at most {MAX_SIDE} a side)")
    return region, store.read_seeded(region, None if seed is None else seed(store))


class _Autosave:
    """Holds what a last-moment commit needs (no widget: it runs at Qt teardown)."""

    def __init__(self) -> None:
        self.edit: RegionEdit | None = None
        self.layer: Any = None

    def flush(self, *_: Any) -> bool:
        """Commit the edit layer now, on this thread, if it changed; whether it did."""
        edit, layer = self.edit, self.layer
        if sys.is_finalizing() or edit is None or layer is None or not edit.changed(layer.data):
            return False
        try:
            return edit.commit(*edit.snapshot(layer.data))
        except Exception as err:  # shown, never raised into Qt teardown
            report_error(err, "Autosave")
            return False


class SlideEditor(Container):
    """Edit region / commit / the store layer of one slide (a part of the Annotate widget).

    Parameters
    ----------
    viewer : napari.Viewer
    slide : callable
        Returns the chosen slide layer.
    class_map : callable
        Returns the chosen :class:`ClassMap`.
    say : callable
        Shows a status line.
    """

    def __init__(self, viewer: Any, slide: Callable[[], Any],
                 class_map: Callable[[], ClassMap], say: Callable[[str], None]) -> None:
        super().__init__(labels=True)
        self._viewer, self._slide, self._class_map, self._say = viewer, slide, class_map, say
        self.saver = _Autosave()
        self.store_layer: Any = None
        #: called with the new edit layer once a region is open (the widget binds its keys)
        self.on_edit_layer: Callable[[Any], None] | None = None
        self.mpp = FloatSpinBox(label="Working µm/px", value=1.0, min=0.05, max=64.0, step=0.05)
        self.folder = FileEdit(label="Label store", mode="d", value="")
        self.folder.choose_btn.text = "..."  # "Choose directory" would widen the dock
        self.folder.choose_btn.tooltip = "Choose the label store's folder"
        self.seed = ComboBox(label="Seed from", choices=self._seed_choices)
        self.edit_button = PushButton(text="Edit region (view or rectangle)")
        self.commit_button = PushButton(text="Commit", enabled=False)
        self.autosave = CheckBox(text="Autosave after painting", value=True)
        self.show_button = PushButton(text="Show corrections")
        self.extend([self.mpp, self.folder, self.seed, self.edit_button, self.commit_button,
                     self.autosave, self.show_button])
        self.store: LabelStore | None = None
        self.store_key: tuple[Any, ...] | None = None
        self.commits = 0
        self._units: Any = None
        self._worker: Any = None
        self._timer = QTimer(self.native)  # owned by Qt: never outlives the QApplication
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self._autosave)
        self.edit_button.changed.connect(lambda: self.edit_region())
        self.commit_button.changed.connect(self.commit)
        self.show_button.changed.connect(self.show_corrections)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.saver.flush)

    # -- choices ----------------------------------------------------------------------------
    def _seed_choices(self, _widget: Any = None) -> list[Any]:
        own = {id(self.saver.layer), id(self.store_layer)}
        return [(NO_SEED, None), *((layer.name, layer) for layer in labels_layers(self._viewer)
                           if id(layer) not in own and layer.ndim == 2)]

    @property
    def edit_layer(self) -> Any:
        """The labels layer being edited (None when no region is open)."""
        return self.saver.layer

    # -- edit region ------------------------------------------------------------------------
    def edit_region(self, seed: bool = True) -> None:
        """Open the drawn rectangle (a selected Shapes layer) or the view as an edit layer."""
        try:
            box = self.drawn_box() or self.view_box()
            key, opener = self._store_opener()
        except ValueError as err:
            report_error(err, "Annotate")
            return
        self.finish_edit(wait=False)
        layer = self.seed.value if seed else None
        seeder = None if layer is None else _seeder(layer)
        self._say("Reading the region ...")

        def work() -> tuple[LabelStore, Region, np.ndarray]:
            store = opener()
            return (store, *load_region(store, box, seeder))

        self._worker = start_worker(work, on_done=lambda out: self._install(key, *out),
                                    on_error=self._fail)

    def show_corrections(self) -> None:
        """Open the slide's label store (in a worker) and show what it holds."""
        try:
            key, opener = self._store_opener()
        except ValueError as err:
            report_error(err, "Annotate")
            return
        start_worker(opener, on_done=lambda store: self._use_store(key, store),
                     on_error=self._fail)

    def _store_opener(self) -> tuple[tuple[Any, ...], Callable[[], LabelStore]]:
        """The store's identity for the current settings and a function that opens it."""
        slide = self._slide()
        if slide is None:
            raise ValueError("choose a slide image layer first")
        class_map, mpp = self._class_map(), float(self.mpp.value)
        folder = "" if str(self.folder.value) in ("", ".") else str(self.folder.value)
        self._units = getattr(slide, "units", None)
        key = (id(slide), class_map, round(mpp, 6), folder)
        store = self.store if self.store_key == key else None
        return key, (lambda: store or open_store(slide, class_map, mpp, folder))

    def _use_store(self, key: tuple[Any, ...], store: LabelStore) -> None:
        if store is not self.store:
            self._drop_store_layer()
            self.store, self.store_key = store, key
            if store.interrupted:
                report_error(RuntimeError(f"{len(store.interrupted)} commit(s) were "
                                          "interrupted by a crash; their regions hold partly "
                                          "old labels: check them"), "Label store")
        self.show_store()

    def drawn_box(self) -> Box | None:
        """World extent of the selected (else last) shape of the active Shapes layer."""
        layer = self._viewer.layers.selection.active
        if layer is None or layer.__class__.__name__ != "Shapes" or not len(layer.data):
            return None
        chosen = sorted(layer.selected_data) or [len(layer.data) - 1]
        points = np.array([layer.data_to_world(p) for i in chosen for p in layer.data[i]])
        (y0, x0), (y1, x1) = points[:, -2:].min(axis=0), points[:, -2:].max(axis=0)
        return Box(float(y0), float(x0), float(y1), float(x1))

    def view_box(self) -> Box:
        """The world box on screen."""
        camera = self._viewer.scene.camera
        return visible_box(camera.center, camera.zoom, self._viewer.canvas.size)

    def _install(self, key: tuple[Any, ...], store: LabelStore, region: Region,
                 labels: np.ndarray) -> None:
        self._worker = None
        self._use_store(key, store)
        cm = store.class_map
        layer = self._viewer.add_labels(
            labels, name=f"edit {region.y0},{region.x0} ({region.shape[0]}x{region.shape[1]})",
            scale=store.scale, translate=store.region_translate(region), opacity=0.7,
            **self._geometry_units(),
            metadata={"neuroseg": {"edit_region": [region.y0, region.x0, region.y1, region.x1],
                                   "label_store": str(store.directory)}})
        apply_palette(layer, cm)
        self.saver.edit, self.saver.layer = RegionEdit(store, region, labels), layer
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_paint)
        layer.events.set_data.connect(self._on_refresh)
        self._viewer.layers.selection.active = layer
        layer.mode = "paint"
        self.commit_button.enabled = True
        self.seed.reset_choices()
        self._say(f"Editing {region.shape[0]} x {region.shape[1]} working pixels at "
                  f"{store.mpp:g} µm/px; store {store.directory}")
        if self.on_edit_layer is not None:
            self.on_edit_layer(layer)

    def _on_paint(self, _event: Any = None) -> None:
        if self.saver.edit is not None:
            self.saver.edit.mark_dirty()
            if self.autosave.value:
                self._timer.start()

    def _on_refresh(self, _event: Any = None) -> None:
        """An undo or redo (or any refresh): autosave checks whether the labels changed."""
        if self.saver.edit is not None and self.autosave.value:
            self._timer.start()

    def _autosave(self) -> None:
        edit, layer = self.saver.edit, self.saver.layer
        if edit is not None and layer is not None and edit.changed(layer.data):
            self.commit()

    # -- committing -------------------------------------------------------------------------
    def commit(self) -> None:
        """Write the edit layer to the store in a worker, then refresh the store layer."""
        edit, layer = self.saver.edit, self.saver.layer
        if edit is None or layer is None:
            self._say("Nothing to commit: open an edit region first")
            return
        self._timer.stop()
        version, labels = edit.snapshot(layer.data)
        start_worker(edit.commit, version, labels, on_done=self._committed, on_error=self._fail)

    def _committed(self, written: bool) -> None:
        if written:
            self.commits += 1
            self._refresh_store_layer()
            self._say(f"Committed ({len(self.store.regions()) if self.store else 0} region(s) "
                      "in the store)")

    def finish_edit(self, wait: bool = True) -> None:
        """Commit the edit layer if it changed, and stop editing it.

        ``wait``: commit on this thread before returning (closing); otherwise in a worker.
        """
        self._timer.stop()
        if wait and self.saver.flush():
            self.commits += 1
            self._refresh_store_layer()
        elif (not wait and self.saver.edit is not None and self.saver.layer is not None
              and self.saver.edit.changed(self.saver.layer.data)):
            self.commit()
        layer = self.saver.layer
        self.saver.edit = self.saver.layer = None
        self.commit_button.enabled = False
        if layer is not None:
            layer.events.paint.disconnect(self._on_paint)
            layer.events.data.disconnect(self._on_paint)
            layer.events.set_data.disconnect(self._on_refresh)
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)

    def on_layer_removed(self, layer: Any) -> None:
        """Called by the widget: a removed edit layer is committed first; a removed store
        layer is forgotten."""
        if layer is self.saver.layer:
            self.finish_edit()
        if layer is self.store_layer:
            self.store_layer = None
        self.seed.reset_choices()

    # -- the store's multiscale layer -------------------------------------------------------
    def show_store(self) -> Any:
        """Add (once) the read-only multiscale labels layer of every committed correction."""
        store = self.store
        if store is None:
            return None
        if self.store_layer is not None and self.store_layer in self._viewer.layers:
            return self.store_layer
        levels = store.labels_levels()
        if len(levels) == 1:  # saved before stores kept two levels: napari needs two
            levels.append(levels[0][::2, ::2])
        layer = self._viewer.add_labels(
            levels, multiscale=True, cache=False, scale=store.scale,
            translate=store.translate, opacity=0.5, name=f"{store.directory.name} corrections",
            **self._geometry_units(),
            metadata={"neuroseg": {"label_store": str(store.directory),
                                   "classes": list(store.class_map.names)}})
        apply_palette(layer, store.class_map)
        self.store_layer = layer
        return layer

    def _geometry_units(self) -> dict[str, Any]:
        return {} if self._units is None else {"units": self._units}

    def _refresh_store_layer(self) -> None:
        if self.store_layer is not None and self.store_layer in self._viewer.layers:
            self.store_layer.refresh()

    def _drop_store_layer(self) -> None:
        layer, self.store_layer = self.store_layer, None
        if layer is not None and layer in self._viewer.layers:
            self._viewer.layers.remove(layer)

    def _fail(self, err: BaseException) -> None:
        self._worker = None
        report_error(err, "Annotate")
        self._say(f"Failed: {err}")

    def teardown(self) -> None:
        """Commit what is pending (synchronously) and stop listening; safe to call again."""
        self.finish_edit()
        self.on_edit_layer = None
        app = QApplication.instance()
        if app is not None:
            try:
                app.aboutToQuit.disconnect(self.saver.flush)
            except (TypeError, RuntimeError):
                pass  # disconnected already

    def close(self) -> None:
        """Commit what is pending (synchronously) and stop listening."""
        self.teardown()
        super().close()


def _seeder(layer: Any) -> Callable[[LabelStore], Callable[[Region], np.ndarray]]:
    """Seed labels from ``layer`` (any grid), resampled to a store's grid."""
    data, scale, translate = layer_level0(layer)

    def for_store(store: LabelStore) -> Callable[[Region], np.ndarray]:
        return lambda region: resample_labels(data, scale, translate, region, store.scale,
                                              store.translate)

    return for_store
