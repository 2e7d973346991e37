"""The slide-view base: one layout, the camera followed only when asked, one teardown."""

import numpy as np
import pytest

from napari_neuroseg.widgets._slide_view import SlideViewWidget

pytestmark = pytest.mark.gui


class _Probe(SlideViewWidget):
    """The smallest subclass: records what the base asks of it."""

    TASKS = ("semantic_segmentation", "tile_classification")
    DEBOUNCE_MS = 10
    RESULT_LAYERS = ("result_layer",)

    def __init__(self, viewer):
        super().__init__(viewer)
        self.following, self.settled, self.stops = False, 0, 0
        self.result_layer = None
        self.lay_out([])

    def settings(self):
        return ("probe",)

    def follows_view(self):
        return self.following

    def run_settled_view(self):
        self.settled += 1

    def cancel(self):
        pass

    def stop_work(self):
        self.stops += 1
        return []


def test_the_base_lays_out_follows_the_camera_and_tears_down_once(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    slide = viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="he")
    widget = _Probe(viewer)
    assert [w for w in widget] == [widget.layer, widget.mpp, widget.picker, widget.cancel_button,
                                   widget.progress, widget.status]
    assert widget.layer.value is slide and widget.mpp.layer is slide
    image, source = widget._slide_and_source()
    assert image.modality == "slide" and source.device == "auto"
    assert widget._config()[0] == id(slide) and widget._config()[-1] == "probe"

    viewer.scene.camera.center = (10.0, 10.0)  # not following: nothing is scheduled
    assert not widget._debounce.isActive()
    widget.following = True
    viewer.scene.camera.center = (20.0, 20.0)
    qtbot.waitUntil(lambda: widget.settled == 1, timeout=2000)

    widget.result_layer = viewer.add_labels(np.zeros((8, 8), np.uint8))
    viewer.layers.remove(widget.result_layer)  # the user deleted the result
    assert widget.result_layer is None

    widget.close()
    widget.close()
    assert widget.stops == 1
    viewer.scene.camera.center = (30.0, 30.0)  # disconnected
    assert not widget._debounce.isActive()
