"""Known crash (issue 12 follow-up): delete both Analyse result layers in one frame.

Run under Xvfb with the real sample slide::

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python \
        tools/repro/remove_result_layers.py [--slow]

Opens ``../shared/data/wsi/cmu-1-small-region.svs``, docks Analyse slide, turns Live on,
closes the panel with its X (the GC freeze of a live run is released), then deletes the labels
and the heatmap layer one after the other and takes a screenshot. Measured 2026-12-07: a
segfault in ``glDrawArrays`` (every run, in 3 orders tried); with ``--slow`` (a redraw
between the two deletions) no crash. Not reproduced with the same layers built from numpy or
from a ResultStore outside a live session.
"""

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

SLIDE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "wsi"


def pump(seconds: float) -> None:
    """Run the Qt event loop for ``seconds``."""
    app, end = QApplication.instance(), time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def main(slow: bool) -> None:
    """Reproduce; prints OK when napari survives."""
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open(str(SLIDE / "cmu-1-small-region.svs"), plugin="napari-neuroseg")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-neuroseg", "Analyse slide")
    widget.picker.device.value = "cpu"
    widget.live.value = True
    end = time.time() + 60
    while widget.session is None and time.time() < end:
        pump(0.2)
    labels, heatmap = widget.labels_layer, widget.heatmap_layer
    dock.destroyOnClose()
    pump(0.3)
    for layer in (labels, heatmap):
        viewer.layers.remove(layer)
        if slow:
            pump(0.5)
    pump(0.5)
    viewer.screenshot(canvas_only=False)
    print("OK", flush=True)
    viewer.close()


if __name__ == "__main__":
    main("--slow" in sys.argv)
