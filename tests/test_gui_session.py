"""A whole GUI session as a user runs it, in one shown viewer under Xvfb.

Open a slide with the Open panel, analyse it live and change a setting mid-session, close the
panel with napari's X, find nuclei, correct them in Annotate (merge, undo), export two views,
and retrain from the shipped weights in the Train panel. After every step the canvas must
still be there (the window keeps its width and the canvas most of it) and nothing may have
crashed. With ``NEUROSEG_SESSION_SHOTS=<folder>`` every step's screenshot is saved there
(``docs/images/session`` holds the ones ``docs/widgets.md`` shows).
"""

import gc
import os
from pathlib import Path

import numpy as np
import pytest

from napari_neuroseg.samples.slide import write_synthetic_slide

pytestmark = [pytest.mark.gui, pytest.mark.slow]
PLUGIN = "napari-neuroseg"
WINDOW = (1600, 1000)
SCREEN = (1920, 1080)  # pytest-xvfb's screen (pyproject.toml): the window stays on it
TIMEOUT = int(os.environ.get("SESSION_TIMEOUT", 180000))
TRAIN_OPTIONS = "crop_size: 128\nbatch_size: 2\nnum_workers: 0\n"


class Session:
    """The viewer, the steps' screenshots and the canvas check after each step."""

    def __init__(self, viewer, qtbot, shots):
        self.viewer, self.qtbot, self.shots, self.step = viewer, qtbot, shots, 0

    def dock(self, name):
        """Dock a panel as tabs with the open ones (two tall panels stacked would make the
        window taller than the screen: see docs/widgets.md)."""
        dock, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
        self.qtbot.wait(100)
        return dock, widget

    def check(self, what):
        """The canvas is still most of the window; save the screenshot when asked."""
        self.qtbot.wait(150)
        window = self.viewer.window._qt_window
        canvas = self.viewer.window._qt_viewer.canvas.native
        assert window.width() == WINDOW[0] and window.height() <= SCREEN[1], (
            f"{what}: the window grew to {window.width()} x {window.height()} px")
        assert canvas.width() >= 700 and canvas.height() >= 600, (
            f"{what}: the canvas is {canvas.width()} x {canvas.height()} px")
        image = self.viewer.screenshot(canvas_only=False)
        assert image.shape[1] == WINDOW[0]
        self.step += 1
        if self.shots is not None:
            from skimage.io import imsave

            imsave(self.shots / f"{self.step:02d}-{what}.png", image, check_contrast=False)


def _look_at(viewer, center, width_um):
    """Centre the view on ``center`` (µm) with ``width_um`` µm across the canvas."""
    camera = viewer.scene.camera
    camera.zoom = viewer.canvas.size[1] / width_um
    camera.center = (0.0, *center) if len(camera.center) == 3 else center


def _wait_live(qtbot, widget):
    qtbot.wait(200)
    qtbot.waitUntil(lambda: widget.session is not None and widget.session.pending == 0
                    and len(widget.session.queue) == 0
                    and widget.counts["computed"] + widget.counts["cached"] > 0,
                    timeout=TIMEOUT)
    qtbot.wait(200)


def _two_touching_nuclei(labels):
    """Two instance ids whose pixels touch (what a user merges), else the two largest."""
    right = labels[:, :-1], labels[:, 1:]
    pairs = {(int(a), int(b)) for a, b in zip(*(r.ravel() for r in right), strict=True)
             if a and b and a != b}
    if pairs:
        return sorted(pairs)[0]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return tuple(int(i) for i in ids[np.argsort(counts)[-2:]])


def test_open_analyse_annotate_export_train_with_the_canvas_throughout(make_napari_viewer,
                                                                        qtbot, tmp_path):
    shots = os.environ.get("NEUROSEG_SESSION_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    session = Session(viewer, qtbot, Path(shots) if shots else None)
    slide = write_synthetic_slide(tmp_path / "he.tif", size=(2048, 3072), tile=256, mpp=0.5,
                                  layout="pages", compression="zlib", levels=4)

    # -- open: the Open panel, as from Plugins > NeuroSeg > Open image ---------------------
    dock, opener = session.dock("Open image")
    opener.path.value = slide
    qtbot.waitUntil(lambda: opener.open_button.enabled, timeout=TIMEOUT)
    opener.open_button.clicked.emit()
    qtbot.waitUntil(lambda: "he" in [layer.name for layer in viewer.layers], timeout=TIMEOUT)
    he = viewer.layers["he"]
    session.check("open")
    dock.destroyOnClose()  # the title-bar X

    # -- analyse live; change a setting mid-session; close with the X ------------------------
    dock, analyse = session.dock("Analyse slide")
    analyse.layer.value = he
    analyse.picker.device.value = "cpu"
    assert not analyse.picker.random_weights  # the default model has trained weights
    _look_at(viewer, (512.0, 768.0), 120.0)
    analyse.live.value = True
    _wait_live(qtbot, analyse)
    session.check("analyse-live")
    analyse.stain.value = not analyse.stain.value  # used to crash in glDrawArrays
    _wait_live(qtbot, analyse)
    session.check("analyse-setting-changed")
    analyse_layers = (analyse.labels_layer, analyse.heatmap_layer)
    dock.destroyOnClose()  # used to crash at the next garbage collection
    qtbot.wait(100)
    gc.collect()
    for layer in analyse_layers:  # the results stay; the user deletes them one by one
        viewer.layers.remove(layer)
        qtbot.wait(200)
    gc.collect()
    session.check("analyse-closed")

    # -- nuclei of two views -----------------------------------------------------------------
    dock, nuclei = session.dock("Nuclei")
    nuclei.layer.value = he
    nuclei.picker.device.value = "cpu"
    _look_at(viewer, (300.0, 500.0), 200.0)
    nuclei.run_button.clicked.emit()
    qtbot.waitUntil(lambda: nuclei.runs >= 1 and not nuclei.busy, timeout=TIMEOUT)
    result = nuclei.result_layer
    assert result.metadata["neuroseg"]["checkpoint"]  # the shipped weights, for Start from
    session.check("nuclei")

    # -- annotate: the result keeps its classes; merge two nuclei, undo ---------------------
    dock_a, annotate = session.dock("Annotate")
    annotate.labels.value = result
    assert annotate.class_map.value.startswith("nuclei")
    colours_before = (type(result.colormap), np.array(result.colormap.colors))  # not recoloured
    before = np.array(result.data, copy=True)
    first, second = _two_touching_nuclei(before)
    annotate.instances.ids.value = f"{first}, {second}"
    annotate.instances.merge_button.clicked.emit()
    qtbot.waitUntil(lambda: not np.array_equal(result.data, before), timeout=TIMEOUT)
    merged = np.asarray(result.data)
    assert (merged == first).any() != (merged == second).any()  # one nucleus now
    session.check("annotate-merge")
    result.undo()
    assert np.array_equal(result.data, before)
    assert type(result.colormap) is colours_before[0]
    assert np.array_equal(result.colormap.colors, colours_before[1])
    session.check("annotate-undo")
    dock_a.destroyOnClose()  # done correcting: the user closes the panel

    # -- export two views into one dataset -----------------------------------------------------
    dock_e, export = session.dock("Export")
    dataset = tmp_path / "corrections"
    for n, center in enumerate([(300.0, 500.0), (700.0, 1100.0)]):
        if n:
            _look_at(viewer, center, 200.0)
            nuclei.run_button.clicked.emit()
            qtbot.waitUntil(lambda: nuclei.runs >= 2 and not nuclei.busy, timeout=TIMEOUT)
        export.labels_layer.value = nuclei.result_layer
        export.image_layer.value = he
        assert export.task.value == "nuclei"  # from the layer's own metadata
        export.folder.value = dataset
        export.patient_id.value = f"TCGA-XX-000{n}"
        export.export()
        qtbot.waitUntil(lambda: not export.running, timeout=TIMEOUT)
        assert export.last_report is not None and export.last_report.added >= 1, (
            export.status.value)
    session.check("export")
    dock_e.destroyOnClose()

    # -- train from the shipped weights: the panel starts from the result's checkpoint ----------
    _dock_t, train = session.dock("Train")
    train.data.value = dataset
    qtbot.waitUntil(lambda: train.task.value == "nuclei", timeout=TIMEOUT)
    viewer.layers.selection.active = nuclei.result_layer
    qtbot.waitUntil(lambda: train.init.value is not None
                    and str(train.init.value).endswith(".safetensors"), timeout=TIMEOUT)
    assert Path(train.init.value) == Path(result.metadata["neuroseg"]["checkpoint"])
    train.out.value = tmp_path / "run"
    train.epochs.value = 1
    train.device.value = "cpu"
    train.config.value = TRAIN_OPTIONS
    train.start()
    qtbot.waitUntil(lambda: train.running, timeout=TIMEOUT)
    session.check("train-running")
    qtbot.waitUntil(lambda: not train.running, timeout=4 * TIMEOUT)
    assert "Failed" not in str(train.status.value), train.status.value
    # handed over only when as good as the start; else offered with both numbers
    assert train.offered is not None or "now used by" in str(train.checkpoint.value)
    session.check("train-done")
