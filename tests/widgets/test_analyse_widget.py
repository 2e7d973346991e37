"""The Analyse widget driven like a user: pick a slide and a model, go live, pan, pan back."""

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_neuroseg.analysis import predict_slide
from napari_neuroseg.io import open_image
from napari_neuroseg.widgets import _slide_view, analyse_widget
from napari_neuroseg.widgets._gc import GcFreeze
from napari_neuroseg.widgets.analyse_widget import AnalyseWidget

from .conftest import add_slide, look_at

pytestmark = pytest.mark.gui
MODEL = "nuclei-lenet"  # the cheapest slide model (random weights); tile mode, windows overlap


class Counted:
    """Wraps a predictor and counts the tiles it is given."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.tiles = 0
        self.output_channels = predictor.output_channels

    def __call__(self, batch):
        self.tiles += len(batch)
        return self.predictor(batch)


@pytest.fixture
def counted(monkeypatch):
    """Every session the widget builds gets a counting predictor; the list of them."""
    made = []
    build = analyse_widget.build_session

    def counting_build(*args, **kwargs):
        session = build(*args, **kwargs)
        session.computer.predictor = Counted(session.predictor)
        made.append(session.computer.predictor)
        return session

    monkeypatch.setattr(analyse_widget, "build_session", counting_build)
    return made


@pytest.fixture
def closing():
    """Widgets to close after the test (their serve workers hold a thread-pool slot)."""
    widgets = []
    yield widgets
    for widget in widgets:
        widget.close()


def _widget(make_napari_viewer, path, closing, show=False):
    viewer = make_napari_viewer(show=show)
    return viewer, _docked(viewer, add_slide(viewer, path), closing)


def _docked(viewer, layer, closing):
    """An Analyse widget docked on ``viewer``, set to ``layer`` and the cheap model on CPU."""
    widget = AnalyseWidget(viewer)
    closing.append(widget)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.picker.model.value = MODEL
    widget.picker.device.value = "cpu"
    return widget


def _settle(qtbot, widget, timeout=60000):
    qtbot.wait(analyse_widget.DEBOUNCE_MS + 50)
    qtbot.waitUntil(lambda: widget.session is not None and widget.session.pending == 0
                    and len(widget.session.queue) == 0, timeout=timeout)
    qtbot.wait(analyse_widget.REFRESH_MS + 50)


def _expected_tiles(session, box, before=()):
    region = session.working_region(box)
    cores = session.grid.tiles_in(region, blended=False)
    needed = {t.key for c in cores for t in session._contributors(c)}
    return needed - set(before)


def test_live_computes_only_new_tiles_aligned_with_the_engine(make_napari_viewer, qtbot,
                                                              slide_path, counted, closing):
    viewer, widget = _widget(make_napari_viewer, slide_path, closing)
    look_at(viewer, (128.0, 128.0), 100.0)
    widget.live.value = True
    _settle(qtbot, widget)
    session, predictor = widget.session, counted[0]
    first_box = widget.visible_box()
    first = _expected_tiles(session, first_box)
    assert predictor.tiles == len(first) > 0
    # pan right: only tiles not computed before
    look_at(viewer, (128.0, 400.0), 100.0)
    _settle(qtbot, widget)
    second = _expected_tiles(session, widget.visible_box(), first)
    assert 0 < len(second) and predictor.tiles == len(first) + len(second)
    # pan back: nothing new
    calls = predictor.tiles
    look_at(viewer, (128.0, 128.0), 100.0)
    _settle(qtbot, widget)
    assert predictor.tiles == calls
    assert "computed" in widget.status.value or "Everything" in widget.status.value
    # the layers hold the engine's own result there, on the same grid
    region = session.working_region(first_box)
    direct = predict_slide(session.plan, predictor.predictor, region=region)
    labels = np.asarray(widget.labels_layer.data[0][region.slices])
    heat = np.asarray(widget.heatmap_layer.data[0][region.slices])
    k = list(session.plan.spec.classes).index(widget.heat_class.value)
    np.testing.assert_allclose(heat, direct.probabilities[k], atol=0.5 / 255 + 1e-4)
    assert (labels == direct.labels).mean() > 0.999  # argmax ties at 1/255 aside
    # aligned: a world point maps to the same slide pixel through both layers
    point = (100.3, 77.9)
    slide_px = np.asarray(widget.layer.value.world_to_data(point))
    label_px = np.asarray(widget.labels_layer.world_to_data(point))
    np.testing.assert_allclose(label_px, slide_px, atol=1e-9)  # native resolution model
    assert widget.labels_layer.multiscale and widget.heatmap_layer.contrast_limits == [0, 1]
    assert widget.labels_layer.features["class"].tolist() == ["NO_NUCLEUS", "NUCLEI"]


def test_heartbeat_while_live_inference_runs(make_napari_viewer, qtbot, slide_path, counted,
                                             closing):
    viewer, widget = _widget(make_napari_viewer, slide_path, closing)
    look_at(viewer, (256.0, 384.0), 80.0)
    widget.live.value = True
    qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
    beats = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    look_at(viewer, (256.0, 384.0), 300.0)  # a wider view: a few dozen tiles
    _settle(qtbot, widget)
    timer.stop()
    assert counted[0].tiles >= 16
    gap = float(np.diff(beats).max())
    print(f"longest event-loop gap during live inference: {1000 * gap:.0f} ms "
          f"over {len(beats)} beats, {counted[0].tiles} tiles")
    # the benchmark measures 50-120 ms (docs/benchmarks.md, V4); 0.3 s still catches work done
    # on the GUI thread (a tile batch, a level read) and leaves room for a loaded 2-core CI
    # machine; the GC freeze that keeps full collections short is checked just below
    assert gap < 0.3
    assert GcFreeze.holders() == 1  # full collections skip napari's objects while live
    widget.close()
    assert GcFreeze.holders() == 0


def test_heatmap_class_colormap_opacity_rerender_only(make_napari_viewer, qtbot, slide_path,
                                                      counted, closing):
    viewer, widget = _widget(make_napari_viewer, slide_path, closing)
    look_at(viewer, (128.0, 128.0), 60.0)
    widget.live.value = True
    _settle(qtbot, widget)
    calls = counted[0].tiles
    widget.heat_class.value = "NO_NUCLEUS"
    widget.colormap.value = "viridis"
    widget.opacity.value = 0.8
    assert widget.heatmap_layer.colormap.name == "viridis"
    assert widget.heatmap_layer.opacity == pytest.approx(0.8)
    assert widget.heatmap_layer.metadata["neuroseg"]["class"] == "NO_NUCLEUS"
    assert len([la for la in viewer.layers if "heatmap" in la.name]) == 1
    qtbot.wait(200)
    assert counted[0].tiles == calls and len(counted) == 1  # no recompute, same session
    # a preprocessing change makes a new session; the tile cache still serves old tiles
    widget.stain.value = False
    _settle(qtbot, widget)
    assert len(counted) == 2 and counted[1].tiles == 0  # nuclei-lenet has no Macenko step
    widget.close()
    assert widget.session is None


def test_whole_image_with_progress_and_cancel(make_napari_viewer, qtbot, slide_path, counted,
                                              closing):
    _viewer, widget = _widget(make_napari_viewer, slide_path, closing)
    widget.whole_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.cancel_button.enabled, timeout=60000)
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=60000)
    widget.cancel_button.clicked.emit()
    assert not widget.cancel_button.enabled and widget.status.value == "Cancelled"
    qtbot.wait(500)
    assert widget.status.value.startswith("Cancelled")  # tile counts do not overwrite it
    done = counted[0].tiles
    total = np.prod(widget.session.grid.n_tiles)
    assert 0 < done < total


def test_a_model_that_does_not_fit_is_a_notification(make_napari_viewer, qtbot, monkeypatch,
                                                     closing):
    errors = []
    monkeypatch.setattr(_slide_view, "report_error", lambda err, where="": errors.append(err))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((300, 300), np.uint8), name="gray")
    widget = AnalyseWidget(viewer)
    closing.append(widget)
    widget.picker.model.value = MODEL
    widget.live.value = True
    qtbot.waitUntil(lambda: widget.status.value.startswith("Failed"), timeout=60000)
    assert errors and "expects 3 channel" in str(errors[0])
    assert widget.session is None and widget.whole_button.enabled


def test_close_disconnects_the_camera(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = AnalyseWidget(viewer)
    before = len(viewer.scene.camera.events.center.callbacks)
    widget.close()
    assert len(viewer.scene.camera.events.center.callbacks) == before - 1
    widget.live.value = True
    viewer.scene.camera.center = (0.0, 5.0, 5.0)
    assert not widget._debounce.isActive()


@pytest.mark.realdata
def test_live_on_the_real_svs(make_napari_viewer, qtbot, shared_data, counted, closing):
    path = shared_data / "wsi" / "cmu-1-small-region.svs"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    viewer, widget = _widget(make_napari_viewer, path, closing)
    layer = widget.layer.value
    h, w = layer.data[0].shape[:2]
    centre = (h / 2 * layer.scale[0], w / 2 * layer.scale[1])
    look_at(viewer, centre, 60 * layer.scale[1] * 4)
    widget.live.value = True
    _settle(qtbot, widget, timeout=120000)
    region = widget.session.working_region(widget.visible_box())
    heat = np.asarray(widget.heatmap_layer.data[0][region.slices])
    assert counted[0].tiles > 0 and heat.max() > 0
    assert 0 <= heat.min() and heat.max() <= 1


def test_live_settings_change_replaces_the_layers_data_in_place(make_napari_viewer, qtbot,
                                                              slide_path, closing):
    """Issue 12, blocker 2: Live on, then untick stain normalisation and change the model.

    Removing the result layers there crashed napari in glDrawArrays; now the same two layers
    show the new session's store and the old store closes once nothing shows it.
    """
    viewer, widget = _widget(make_napari_viewer, slide_path, closing, show=True)
    look_at(viewer, (256.0, 384.0), 400.0)
    widget.live.value = True
    _settle(qtbot, widget)
    labels, heatmap = widget.labels_layer, widget.heatmap_layer
    first = widget.session.store
    widget.stain.value = not widget.stain.value
    qtbot.wait(20)  # a frame is drawn while the old session is retired
    _settle(qtbot, widget)
    assert widget.session.store is not first
    assert widget.labels_layer is labels and widget.heatmap_layer is heatmap
    assert [layer for layer in viewer.layers if layer in (labels, heatmap)] == [labels, heatmap]
    assert labels.data[0].store is widget.session.store
    qtbot.waitUntil(lambda: len(widget._retired) == 0, timeout=10000)
    assert first.closed
    widget.picker.model.value = "lgg-tissue"  # other classes: colours and features follow
    _settle(qtbot, widget)
    assert labels.name == "lgg-tissue labels" and list(labels.features["class"]) == list(
        widget.session.plan.spec.classes)
    assert len(viewer.layers) == 3
    widget.live.value = False
    widget.stain.value = not widget.stain.value  # retired with no successor: layers stay
    qtbot.wait(200)
    assert labels in viewer.layers and labels.data[0].store.closed is False
    viewer.screenshot(canvas_only=False)  # the layers still draw


def test_heatmap_class_change_keeps_the_layer(make_napari_viewer, qtbot, slide_path, closing):
    viewer, widget = _widget(make_napari_viewer, slide_path, closing, show=True)
    look_at(viewer, (256.0, 384.0), 400.0)
    widget.live.value = True
    _settle(qtbot, widget)
    heatmap = widget.heatmap_layer
    other = next(c for c in widget.session.plan.spec.classes if c != widget.heat_class.value)
    widget.heat_class.value = other
    assert widget.heatmap_layer is heatmap and heatmap.metadata["neuroseg"]["class"] == other
    assert len(viewer.layers) == 3


def test_whole_image_time_left_from_the_pace_so_far(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(analyse_widget.time, "monotonic", lambda: now[0])
    clock = analyse_widget.WholeClock()
    now[0] += 10.0
    assert clock.left(2, 50) == ""  # too few tiles to tell
    assert clock.left(10, 50) == ", about 50 s left"
    assert clock.left(10, 500) == ", about 8 min left"


def test_mpp_of_a_layer_napari_opened_is_shown_and_settable(make_napari_viewer, qtbot,
                                                            slide_path, closing):
    """Issue 12, item 4: a layer napari's own reader opened is silently 1 µm/px; the widget
    shows that it is assumed, lets the user set it, and the next session is re-planned."""
    viewer = make_napari_viewer(show=True)
    image = open_image(slide_path)[0]
    layer = viewer.add_image(image.levels[0].compute(), rgb=True, name="tile.png")  # no meta
    widget = _docked(viewer, layer, closing)
    assert widget.mpp.value_box.value == 1.0 and "ASSUMED" in widget.mpp.origin.value
    look_at(viewer, (256.0, 384.0), 400.0)
    widget.live.value = True
    _settle(qtbot, widget)
    first = widget.session
    assert first.plan.image.scale == (1.0, 1.0)
    widget.mpp.value_box.value = 0.5
    assert tuple(layer.scale) == (0.5, 0.5) and widget.mpp.origin.value == "set by you"
    assert layer.metadata["neuroseg"]["mpp"] == [0.5, 0.5]
    qtbot.waitUntil(lambda: widget.session is not None and widget.session is not first,
                    timeout=60000)
    plan = widget.session.plan  # made for 0.5 µm/px: the slide is half as tall in µm
    assert plan.image.scale == (0.5, 0.5)
    height_um = plan.array.shape[0] * plan.scale[0]
    assert height_um == pytest.approx(first.plan.array.shape[0] * first.plan.scale[0] / 2,
                                      rel=0.01)
    assert tuple(widget.labels_layer.scale) == pytest.approx(plan.scale)


def test_result_layers_record_the_weights_that_made_them(make_napari_viewer, qtbot,
                                                         slide_path, closing):
    viewer, widget = _widget(make_napari_viewer, slide_path, closing)
    look_at(viewer, (256.0, 384.0), 400.0)
    widget.live.value = True
    _settle(qtbot, widget)
    for layer in (widget.labels_layer, widget.heatmap_layer):
        meta = layer.metadata["neuroseg"]
        assert meta["result_of"] == "Analyse slide" and meta["model"] == MODEL
        shipped = widget.picker.registry.checkpoint(MODEL)
        assert meta["checkpoint"] == (str(shipped.absolute()) if shipped else None)
    assert widget.labels_layer not in [layer for _n, layer in widget._slide_choices()]
