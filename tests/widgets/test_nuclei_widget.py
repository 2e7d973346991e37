"""The Nuclei widget driven like a user: open a slide, look somewhere, find nuclei, follow."""

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from napari.layers import Labels
from scipy import ndimage as ndi

from napari_neuroseg.io import open_image, to_layer_data
from napari_neuroseg.live.viewport import box_to_pixels, visible_box
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.hovernet import hv_targets
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets import _slide_view, _view_analysis
from napari_neuroseg.widgets._gc import GcFreeze
from napari_neuroseg.widgets._model_picker import FROM_FILE
from napari_neuroseg.widgets.nuclei_widget import NucleiWidget

from .conftest import docked, look_at, run_checkpoint, wait_runs

pytestmark = pytest.mark.gui


class Oracle:
    """A stand-in HoVer-Net: nuclei are the dark pixels; h/v maps from what it sees."""

    output_channels = 4

    def __init__(self, delay=0.0):
        self.delay = delay
        self.tiles = 0

    def __call__(self, batch):
        time.sleep(self.delay)
        self.tiles += len(batch)
        out = np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)
        for i, patch in enumerate(batch):
            dark = patch.mean(axis=0) < 140
            out[i, 1], out[i, 0] = dark, ~dark
            out[i, 2:4] = hv_targets(ndi.label(dark)[0])
        return out


@pytest.fixture
def oracle(monkeypatch):
    """Registry models get the oracle instead of random weights (model loading skipped)."""
    predictor = Oracle()
    monkeypatch.setattr(ModelSource, "runner", lambda self: predictor)
    return predictor


@pytest.fixture
def warnings(monkeypatch):
    shown = []
    monkeypatch.setattr(_view_analysis, "warn", shown.append)
    return shown


def _widget(make_napari_viewer, path):
    return docked(make_napari_viewer, path, NucleiWidget)


def _expected_region(viewer, layer):
    camera = viewer.scene.camera
    box = visible_box(camera.center, camera.zoom, viewer.canvas.size)
    return box_to_pixels(box, layer.scale, layer.translate, layer.data[0].shape)


def test_nuclei_of_the_view_aligned_counted(make_napari_viewer, qtbot, slide_path, oracle,
                                            warnings):
    viewer, slide, widget = _widget(make_napari_viewer, slide_path)
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run_button.native.click()
    wait_runs(qtbot, widget, 1)
    if widget.picker.checkpoint() is None:
        assert warnings and "random weights" in warnings[0]
    else:  # trained real-data weights ship with the package: nothing to warn about
        assert warnings == []
    result = widget.result
    assert result.region == _expected_region(viewer, slide)  # model at 0.5 µm/px = level 0
    layer = widget.result_layer
    assert isinstance(layer, Labels) and layer in viewer.layers
    assert layer.data.shape == result.working_region.shape
    # a label pixel sits where its source pixel does
    y0, x0 = result.region.start
    for i, j in [(0, 0), (17, 53), (layer.data.shape[0] - 1, layer.data.shape[1] - 1)]:
        np.testing.assert_allclose(layer.data_to_world((i, j)),
                                   slide.data_to_world((y0 + i, x0 + j)))
    np.testing.assert_allclose(layer.scale, slide.scale)
    # nuclei found, the text agrees with the labels, density = count / area
    ids = np.unique(layer.data[layer.data > 0])
    assert len(ids) > 5 and int(widget.count.value) == len(ids) == ids.max()
    h, w = layer.data.shape
    area_mm2 = h * w * (0.5e-3) ** 2
    assert result.density == pytest.approx(len(ids) / area_mm2)
    assert widget.density.value.startswith(f"{len(ids) / area_mm2:.0f} nuclei/mm²")
    assert set(layer.features["class"][1:]) == {"nucleus"}
    # the dark pixels of the source are nuclei
    source = np.asarray(slide.data[0][result.region.y0:result.region.y1,
                                      result.region.x0:result.region.x1])
    dark = source.mean(axis=2) < 140
    assert (layer.data > 0)[dark].mean() > 0.8  # specks under min_size are dropped
    assert dark[layer.data > 0].mean() > 0.95
    # the same view again: every tile from the widget's cache, the same nuclei
    tiles, before = oracle.tiles, layer.data.copy()
    widget.run()
    wait_runs(qtbot, widget, 2)
    assert oracle.tiles == tiles and widget.result.counts.computed == 0
    assert widget.result.counts.cached > 0
    np.testing.assert_array_equal(layer.data, before)
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert GcFreeze.holders() == 0  # the GC freeze is held during a run only
    widget.close()


def test_follow_the_view_reruns_replaces_and_cancels_stale_runs(make_napari_viewer, qtbot,
                                                                slide_path, oracle):
    viewer, slide, widget = _widget(make_napari_viewer, slide_path)
    n_callbacks = len(viewer.scene.camera.events.center.callbacks) - 1
    look_at(viewer, (200.0, 200.0), 100.0)
    widget.follow.value = True  # runs at once
    wait_runs(qtbot, widget, 1)
    first_layer, first_region = widget.result_layer, widget.result.region
    oracle.delay = 1.0  # slow enough to move the camera during a run
    look_at(viewer, (300.0, 500.0), 100.0)
    qtbot.waitUntil(lambda: widget._worker is not None, timeout=5000)
    look_at(viewer, (320.0, 520.0), 100.0)  # moved again while that run computes
    look_at(viewer, (330.0, 600.0), 100.0)
    wait_runs(qtbot, widget, 2)
    qtbot.wait(_view_analysis.DEBOUNCE_MS + 100)
    assert not widget.busy
    assert widget.runs == 2 and widget.discarded == 1  # the stale run was not shown
    assert widget.result.region == _expected_region(viewer, slide) != first_region
    assert widget.result_layer is first_layer  # replaced in place, one layer
    assert sum(isinstance(la, Labels) for la in viewer.layers) == 1
    y0, x0 = widget.result.region.start
    np.testing.assert_allclose(first_layer.data_to_world((0, 0)),
                               slide.data_to_world((y0, x0)))
    widget.follow.value = False
    look_at(viewer, (100.0, 100.0), 100.0)
    qtbot.wait(_view_analysis.DEBOUNCE_MS + 100)
    assert widget.runs == 2 and not widget.busy
    widget.close()
    assert len(viewer.scene.camera.events.center.callbacks) == n_callbacks


def test_big_views_are_capped_and_errors_are_notifications(make_napari_viewer, qtbot,
                                                           slide_path, oracle, monkeypatch):
    errors = []
    monkeypatch.setattr(_slide_view, "report_error", lambda err, where="": errors.append(err))
    viewer, _, widget = _widget(make_napari_viewer, slide_path)
    widget.max_size.value = 256
    look_at(viewer, (256.0, 384.0), 800.0)  # the whole slide
    widget.run()
    wait_runs(qtbot, widget, 1)
    assert widget.result.capped and max(widget.result_layer.data.shape) <= 256
    assert "only its centre" in widget.status.value
    look_at(viewer, (-5000.0, -5000.0), 100.0)  # off the slide
    widget.run()
    assert errors and "does not show the slide" in str(errors[-1])
    widget.picker.model.value = FROM_FILE  # no file chosen
    look_at(viewer, (256.0, 384.0), 100.0)
    widget.run()
    assert "choose a checkpoint" in str(errors[-1])
    assert not widget.busy and widget.runs == 1  # still usable
    widget.close()


def test_a_real_checkpoint_runs_on_the_view(make_napari_viewer, qtbot, slide_path,
                                            tiny_hovernet, warnings):
    viewer, _, widget = _widget(make_napari_viewer, slide_path)
    run_checkpoint(qtbot, viewer, widget, tiny_hovernet, (250.0, 380.0), 150.0)
    assert not warnings  # trained weights from a file: nothing to warn about
    labels = widget.result_layer.data
    assert labels.dtype == np.int32 and labels.shape == widget.result.working_region.shape
    assert int(widget.count.value) == len(np.unique(labels[labels > 0]))
    assert widget.result_layer.name == "tiny-hovernet nuclei"
    widget.close()


@pytest.mark.realdata
def test_real_nuclei_tile(make_napari_viewer, qtbot, shared_data, tiny_hovernet):
    from skimage.io import imread

    tiles = sorted((shared_data / "nuclei_lgg_tiles" / "raw_image").glob("*.png"))
    if not tiles:
        pytest.skip("no nuclei tiles")
    viewer = make_napari_viewer()
    pixels = imread(tiles[0])[..., :3]
    slide = viewer.add_image(pixels, rgb=True, scale=(0.5, 0.5), name="tile")
    widget = NucleiWidget(viewer)
    widget.layer.value = slide
    run_checkpoint(qtbot, viewer, widget, tiny_hovernet, (128.0, 128.0), 300.0)
    labels = widget.result_layer.data
    assert labels.shape == pixels.shape[:2]
    assert int(widget.count.value) == len(np.unique(labels[labels > 0]))
    widget.close()


def test_the_canvas_keeps_its_width_after_a_run(make_napari_viewer, qtbot, slide_path, oracle):
    """Issue 12, blocker 3: status lines never wrapped, so after a run the dock grew until the
    canvas was 0 px wide (and the window past the screen)."""
    from napari_neuroseg.widgets._panel import PANEL_MAX_WIDTH

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    [(data, kwargs, kind)] = to_layer_data(open_image(slide_path))
    getattr(viewer, f"add_{kind}")(data, **kwargs)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-neuroseg", "Nuclei")
    widget.picker.device.value = "cpu"
    qtbot.wait(100)
    canvas = viewer.window._qt_viewer.canvas.native.width()
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 1)
    widget.status.value += "; a long note " * 40  # whatever the notes say
    widget.picker.provenance.value = "weights from /a/very/long/path/" * 10
    qtbot.wait(100)
    assert dock.width() <= PANEL_MAX_WIDTH + 40  # the dock's frame and margins
    assert viewer.window._qt_window.width() == 1600
    assert viewer.window._qt_viewer.canvas.native.width() >= min(canvas, 900)
    from qtpy.QtCore import QEvent, QPoint
    from qtpy.QtGui import QHelpEvent
    from qtpy.QtWidgets import QApplication

    label = widget.status.native
    assert label.wordWrap()
    QApplication.sendEvent(label, QHelpEvent(QEvent.Type.ToolTip, QPoint(2, 2), QPoint(2, 2)))
    assert label.toolTip() == widget.status.value  # hovering shows the whole text


def test_slides_offered_leave_out_result_layers_and_a_new_mpp_replans(make_napari_viewer,
                                                                     qtbot, slide_path, oracle):
    """Issue 12: Nuclei offered the Stain result layer as a slide; a re-run after the user set
    the µm/px reused the old plan and misplaced the result."""
    viewer, slide, widget = _widget(make_napari_viewer, slide_path)
    translated = viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="H&E (stain)",
                                  metadata={"neuroseg": {"result_of": "Stain translation"}})
    assert translated not in [layer for _name, layer in widget._slide_choices()]
    assert slide in [layer for _name, layer in widget._slide_choices()]
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 1)
    first = widget.loaded.plan
    widget.mpp.value_box.value = 0.25  # the slide's pixels are half as big
    assert tuple(slide.scale) == (0.25, 0.25)
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 2)
    assert widget.loaded.plan is not first and widget.loaded.plan.image.scale == (0.25, 0.25)


def test_the_result_layer_records_the_checkpoint_that_made_it(make_napari_viewer, qtbot,
                                                             slide_path, tiny_hovernet):
    """Issue 12, item 9: "Start from" needs the checkpoint behind a result, not a name."""
    viewer, _, widget = _widget(make_napari_viewer, slide_path)
    widget.picker.model.value = FROM_FILE
    widget.picker.file.value = tiny_hovernet
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 1)
    meta = widget.result_layer.metadata["neuroseg"]
    assert meta["result_of"] == "Nuclei"
    assert Path(meta["checkpoint"]) == Path(tiny_hovernet).absolute()


TYPES = ["background", "tumour", "immune"]


class TypedOracle(Oracle):
    """The oracle with a type branch: a dark pixel is 'tumour' where red is over blue."""

    output_channels = 4 + len(TYPES)

    def __call__(self, batch):
        maps = super().__call__(batch)
        types = np.zeros((len(batch), len(TYPES), *batch.shape[2:]), np.float32)
        for i, patch in enumerate(batch):
            dark, tumour = patch.mean(axis=0) < 140, patch[0] > patch[2]
            types[i, 0], types[i, 1], types[i, 2] = ~dark, dark & tumour, dark & ~tumour
        return np.concatenate([maps, types], axis=1)


def _typed_source(monkeypatch, predictor, type_classes, key):
    spec = dataclasses.replace(ModelRegistry().get("nuclei-hovernet"), name="typed-hovernet",
                               extra={"type_classes": list(type_classes)})
    monkeypatch.setattr(ModelSource, "spec", lambda self: spec)
    monkeypatch.setattr(ModelSource, "runner", lambda self: predictor)
    monkeypatch.setattr(ModelSource, "key", lambda self: key)


def test_types_of_a_typed_model_in_their_own_layer_and_text(make_napari_viewer, qtbot,
                                                            slide_path, monkeypatch):
    from napari_neuroseg.analysis.nuclei_types import TYPE_PALETTE, type_image

    _typed_source(monkeypatch, TypedOracle(), TYPES, "typed")
    viewer, slide, widget = _widget(make_napari_viewer, slide_path)
    assert widget.types.native.isHidden()
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 1)
    result, labels = widget.result, widget.result_layer.data
    assert result.type_names == tuple(TYPES) and result.count > 5
    assert set(result.types) == set(range(1, result.count + 1))
    types = widget.types_layer
    assert isinstance(types, Labels) and types.name == "typed-hovernet types"
    assert types in viewer.layers and types is not widget.result_layer
    np.testing.assert_array_equal(types.data, type_image(labels, result.types))
    np.testing.assert_allclose(types.scale, widget.result_layer.scale)
    np.testing.assert_allclose(types.translate, widget.result_layer.translate)
    assert list(types.features["class"]) == TYPES
    assert types.metadata["neuroseg"]["classes"] == TYPES
    assert types.metadata["neuroseg"]["result_of"] == "Nuclei"
    red = int(TYPE_PALETTE[0][1:3], 16) / 255
    assert types.colormap.color_dict[1][0] == pytest.approx(red, abs=1e-3)
    assert types.colormap.color_dict[0][3] == 0  # background transparent
    # most nuclear pixels carry the type the oracle gave them
    source = np.asarray(slide.data[0][result.region.y0:result.region.y1,
                                      result.region.x0:result.region.x1]).astype(int)
    expected = np.where(source[..., 0] > source[..., 2], 1, 2)
    assert (types.data == expected)[labels > 0].mean() > 0.9
    # the text: count and density per type; the instance layer names each nucleus's type
    assert not widget.types.native.isHidden()
    counts = result.type_counts
    assert sum(counts.values()) == result.count
    for name, n in counts.items():
        assert f"{name} {n} (" in widget.types.value
    assert "/mm²" in widget.types.value
    features = widget.result_layer.features
    assert features["type"][0] == "background"
    assert {features["type"][i] for i in range(1, result.count + 1)} <= {"tumour", "immune"}
    # again: the same types layer, updated in place
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 2)
    assert widget.types_layer is types
    assert sum(isinstance(la, Labels) for la in viewer.layers) == 2
    # a model without types: its layer goes, the text hides, nothing invented
    _typed_source(monkeypatch, Oracle(), [], "untyped")
    widget.tissue.value = not widget.tissue.value  # new settings: the model is reloaded
    widget.run_button.clicked.emit()
    wait_runs(qtbot, widget, 3)
    assert widget.result.types == {} and widget.types_layer is None
    assert types not in viewer.layers and widget.types.native.isHidden()
    assert "type" not in widget.result_layer.features
    widget.close()


def test_a_types_layer_the_user_deleted_comes_back(make_napari_viewer, qtbot, slide_path,
                                                   monkeypatch):
    _typed_source(monkeypatch, TypedOracle(), TYPES, "typed")
    viewer, _, widget = _widget(make_napari_viewer, slide_path)
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run()
    wait_runs(qtbot, widget, 1)
    viewer.layers.remove(widget.types_layer)
    assert widget.types_layer is None
    widget.run()
    wait_runs(qtbot, widget, 2)
    assert widget.types_layer in viewer.layers
    widget.close()


def test_a_tiny_random_checkpoint_with_a_type_branch(make_napari_viewer, qtbot, slide_path,
                                                     tmp_path):
    """The real network through a checkpoint: three type outputs give a types layer."""
    registry = ModelRegistry()
    base = registry.get("nuclei-hovernet")
    spec = dataclasses.replace(base, name="tiny-typed", arch_kwargs={
        **base.arch_kwargs, "base_features": 4, "encoder_depth": 2, "blocks_per_level": 1,
        "n_types": 3}, extra={**base.extra, "type_classes": TYPES,
                              "postprocess": {"np_threshold": 0.0, "min_size": 1}})
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny-typed", registry.build(spec), spec)
    viewer, _, widget = _widget(make_napari_viewer, slide_path)
    run_checkpoint(qtbot, viewer, widget, ckpt, (250.0, 380.0), 100.0)
    result = widget.result
    assert result.type_names == tuple(TYPES) and result.count > 0
    assert set(result.types) == set(range(1, result.count + 1))
    assert widget.types_layer.name == "tiny-typed types"
    assert widget.types_layer.data.max() <= 2
    widget.close()


def test_quick_preview_first_then_the_model_in_the_same_layer(make_napari_viewer, qtbot,
                                                              slide_path, oracle):
    viewer, _slide, widget = _widget(make_napari_viewer, slide_path)
    assert widget.preview.native.isVisibleTo(widget.native) and widget.preview.value  # on
    oracle.delay = 1.0  # the model is slow: the preview is on screen meanwhile
    look_at(viewer, (250.0, 380.0), 150.0)
    widget.run()
    qtbot.waitUntil(lambda: widget.previews == 1, timeout=30000)
    assert widget.runs == 0 and widget.busy
    layer = widget.result_layer
    assert widget.status.value.startswith("Preview (classical hematoxylin watershed")
    assert widget.count.value.endswith("(preview)")
    assert "not the model" in layer.metadata["neuroseg"]["preview"]
    preview = layer.data.copy()
    assert preview.max() > 5
    wait_runs(qtbot, widget, 1)
    assert widget.result_layer is layer  # replaced in place
    assert layer.metadata["neuroseg"]["preview"] == ""
    assert not widget.count.value.endswith("(preview)") and "µm/px" in widget.status.value
    assert layer.data.shape == preview.shape == widget.result.working_region.shape
    # switched off: the next run shows only the model
    oracle.delay = 0.0
    widget.preview.value = False
    look_at(viewer, (300.0, 500.0), 150.0)
    widget.run()
    wait_runs(qtbot, widget, 2)
    assert widget.previews == 1
    widget.close()
