"""The CT widget driven like a user would, on the synthetic phantom and the real GE head CT."""

import dataclasses

import numpy as np
import pytest
import torch

from napari_neuroseg.analysis.ct_view import slice_gradcam, slice_positions_mm
from napari_neuroseg.analysis.volume import classify_slices
from napari_neuroseg.io import open_image, to_layer_data
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.lenet import LeNet5
from napari_neuroseg.models.registry import DEFAULT_SPECS
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.preprocess.ct import brain_mask
from napari_neuroseg.samples.ct import HeadPhantom, write_ct_series
from napari_neuroseg.widgets import ct_widget
from napari_neuroseg.widgets._model_picker import FROM_FILE
from napari_neuroseg.widgets.ct_widget import NO_DECISION_RANDOM, RANDOM_TITLE, CTWidget

pytestmark = pytest.mark.gui

N_SLICES, SIZE, SPACING = 8, 64, (6.0, 3.0, 3.0)


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    write_ct_series(folder, n_slices=N_SLICES, size=SIZE, spacing=SPACING, lesion=True)
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """ct-metastasis on a seeded LeNet-5 reading 32 x 32 slices: a checkpoint a user could pick."""
    spec = DEFAULT_SPECS["ct-metastasis"]
    spec = dataclasses.replace(
        spec, name="ct-tiny", architecture="lenet5", threshold=0.3,
        arch_kwargs={"in_channels": 1, "n_classes": 1, "input_size": 32, "dropout": 0.0},
        input=dataclasses.replace(spec.input, patch_size=(32, 32)))
    torch.manual_seed(0)
    model = LeNet5(**spec.arch_kwargs)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "ct-tiny", model, spec)


def _add(viewer, folder):
    images = open_image(folder)
    for data, kwargs, layer_type in to_layer_data(images):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    return viewer.layers[-1], images[0]


@pytest.fixture
def session(make_napari_viewer, ct_folder, tiny_checkpoint, qtbot):
    viewer = make_napari_viewer()
    layer, image = _add(viewer, ct_folder)
    widget = CTWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.picker.model.value = FROM_FILE
    widget.picker.file.value = tiny_checkpoint
    widget.picker.device.value = "cpu"
    yield viewer, widget, layer, image
    qtbot.waitUntil(lambda: not widget._workers, timeout=20000)


def _go_to(viewer, plane):
    viewer.dims.set_current_step(0, plane)


def test_classify_plots_probabilities_and_decides_at_the_threshold(session, qtbot,
                                                                    tiny_checkpoint):
    viewer, widget, layer, image = session
    assert widget.layer.value == layer.name
    assert widget.threshold.value == pytest.approx(0.3)  # the checkpoint's threshold
    widget.classify_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.status.value.startswith("Classified"), timeout=30000)
    expected = classify_slices(image, ModelRunner.from_checkpoint(tiny_checkpoint, device="cpu"),
                               widget._runner[1].spec)
    xs, ys = widget.plot.curve.get_data()
    np.testing.assert_allclose(ys, expected.probabilities, rtol=1e-5)
    np.testing.assert_allclose(xs, slice_positions_mm(image))
    np.testing.assert_allclose(xs, layer.translate[0] + np.arange(N_SLICES) * layer.scale[0])
    assert widget.progress.value == N_SLICES
    peak = float(np.max(expected.probabilities))
    widget.threshold.value = round(peak - 0.01, 2)
    assert widget.decision.value.startswith("POSITIVE")
    assert f"peak slice {int(np.argmax(expected.probabilities))}" in widget.decision.value
    assert widget.plot.threshold_line.get_ydata()[0] == pytest.approx(round(peak - 0.01, 2))
    widget.threshold.value = round(peak + 0.01, 2)
    assert widget.decision.value.startswith("NEGATIVE")
    _go_to(viewer, 5)
    assert widget.current_plane() == 5
    assert widget.plot.marker.get_visible()
    assert widget.plot.marker.get_xdata()[0] == pytest.approx(xs[5])


def _assert_over(overlay, layer):
    """``overlay`` lies exactly over ``layer``: same shape, scale and translate."""
    assert overlay.data.shape == layer.data.shape
    np.testing.assert_allclose(overlay.scale, layer.scale)
    np.testing.assert_allclose(overlay.translate, layer.translate)


def test_gradcam_layer_is_the_current_slice_aligned_with_the_ct(session, qtbot):
    viewer, widget, layer, image = session
    lesion_plane = N_SLICES // 2
    _go_to(viewer, lesion_plane)
    widget.cam_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.cam_layer is not None, timeout=30000)
    cam = widget.cam_layer
    _assert_over(cam, layer)
    assert tuple(cam.contrast_limits) == (0.0, 1.0)
    runner = widget._runner[1]
    expected = slice_gradcam(runner.model, runner.spec, np.asarray(image.levels[0][lesion_plane]),
                             (SPACING[1], SPACING[2]))
    np.testing.assert_allclose(cam.data[lesion_plane], expected, atol=1e-5)
    assert cam.data[lesion_plane].max() > 0
    made_by = cam.metadata["neuroseg"]  # the weights file that made it (Train starts from it)
    assert made_by["checkpoint"] == str(widget.picker.file.value.absolute())
    assert made_by["model"] == "ct-tiny" and made_by["result_of"] == "CT"
    assert not np.delete(cam.data, lesion_plane, axis=0).any()
    widget.cam_follow.value = True  # the heatmap follows the slice on screen
    _go_to(viewer, 2)
    qtbot.waitUntil(lambda: widget.status.value == "Grad-CAM on slice 2", timeout=30000)
    assert widget.cam_layer is cam
    expected = slice_gradcam(runner.model, runner.spec, np.asarray(image.levels[0][2]),
                             (SPACING[1], SPACING[2]))
    np.testing.assert_allclose(cam.data[2], expected, atol=1e-5)  # may be all zero: random net


def test_brain_mask_layer_fills_the_skull_and_is_aligned(session, qtbot):
    viewer, widget, layer, image = session
    _go_to(viewer, 3)
    widget.mask_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.mask_volume_ml is not None, timeout=30000)
    mask = widget.mask_layer
    _assert_over(mask, layer)
    assert list(mask.features["class"]) == ["background", "brain"]
    middle = np.asarray(image.levels[0][3])
    np.testing.assert_array_equal(mask.data[3] > 0, brain_mask(middle, spacing=SPACING[1:]))
    assert mask.data[3, SIZE // 2, SIZE // 2] == 1  # the centre of the head is brain
    assert mask.data[3, 0, 0] == 0 and not mask.data[3][middle > 300].any()  # air, skull
    inside = middle[mask.data[3] > 0]
    assert inside.min() >= -60 and inside.max() <= 110  # soft tissue only (noise: 3 HU)
    # The phantom's brain (grey matter ellipsoid at 0.88 of the head) cut to the stack.
    head = HeadPhantom.fitting(SIZE * SPACING[1], (N_SLICES - 1) * SPACING[0])
    a, b, c = (0.88 * s for s in head.semi_axes)
    z = np.linspace(-c, c, 2001)
    stack = (N_SLICES / 2) * SPACING[0]
    area = np.pi * a * b * np.clip(1 - (z / c) ** 2, 0, None)
    truth = np.trapezoid(np.where(np.abs(z) <= stack, area, 0), z) / 1000
    assert widget.mask_volume_ml == pytest.approx(truth, rel=0.05)  # measured 622.5 vs 621.2
    assert widget.status.value.startswith("Brain mask:")


def test_window_presets_set_the_contrast_limits(session):
    _viewer, widget, layer, _image = session
    expected = {"brain": (0, 80), "subdural": (-32.5, 182.5), "bone": (-800, 2000)}
    for name, limits in expected.items():
        getattr(widget.windows, name).clicked.emit()
        np.testing.assert_allclose(layer.contrast_limits, limits)


def test_errors_become_notifications_and_closing_disconnects(session, qtbot, monkeypatch):
    viewer, widget, _layer, _image = session
    errors = []
    monkeypatch.setattr(ct_widget, "report_error", lambda err, where="": errors.append(str(err)))
    widget.picker.file.value = widget.picker.file.value.parent / "missing.safetensors"
    widget.classify_button.clicked.emit()
    assert errors and "choose a checkpoint file" in errors[0]
    assert not widget._workers  # nothing started; the widget stays usable
    callbacks = viewer.dims.events.current_step.callbacks
    count = len(callbacks)
    widget.close()
    assert len(viewer.dims.events.current_step.callbacks) == count - 1


@pytest.mark.realdata
def test_real_ge_head_ct_brain_mask_volume(make_napari_viewer, shared_data, qtbot):
    viewer = make_napari_viewer()
    layer, image = _add(viewer, shared_data / "ct_head_ge")
    widget = CTWidget(viewer)
    assert widget.layer.value == layer.name
    widget.mask_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.mask_volume_ml is not None, timeout=120000)
    positions = slice_positions_mm(image)
    assert np.ptp(positions) == pytest.approx(144.1, abs=0.5)  # uneven gaps, not 27 x mean
    assert 800 <= widget.mask_volume_ml <= 2000, widget.mask_volume_ml
    np.testing.assert_allclose(widget.mask_layer.translate, layer.translate)
    widget.windows.bone.clicked.emit()
    np.testing.assert_allclose(layer.contrast_limits, (-800, 2000))


def _classify(widget, qtbot):
    widget.classify_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget._workers.get("classify"), timeout=60000)


def test_random_weights_give_no_patient_decision_only_the_warning(session, qtbot, monkeypatch):
    _viewer, widget, _layer, _image = session
    warnings = []
    monkeypatch.setattr(ct_widget, "warn", warnings.append)
    widget.picker.model.value = "ct-metastasis"  # ships no trained weights
    assert widget.picker.random_weights
    assert widget.plot.warning == RANDOM_TITLE  # said before anything runs
    _classify(widget, qtbot)
    assert widget.status.value == f"Classified {N_SLICES} slices"
    assert widget.result is not None and len(widget.result.planes) == N_SLICES
    assert widget.decision.value == NO_DECISION_RANDOM
    for threshold in (0.0, 1.0):  # no threshold makes a decision from random weights
        widget.threshold.value = threshold
        assert "POSITIVE" not in widget.decision.value
        assert "NEGATIVE" not in widget.decision.value
    assert widget.plot.warning == RANDOM_TITLE
    assert len(warnings) == 1 and "random weights" in warnings[0]
    widget.picker.model.value = FROM_FILE  # trained weights: a decision, no title
    widget.picker.device.value = "cpu"
    _classify(widget, qtbot)
    assert widget.decision.value.startswith(("POSITIVE", "NEGATIVE"))
    assert widget.plot.warning == ""


def test_a_failed_classification_leaves_no_decision_on_screen(session, qtbot, monkeypatch):
    _viewer, widget, _layer, _image = session
    _classify(widget, qtbot)
    assert widget.decision.value.startswith(("POSITIVE", "NEGATIVE"))
    errors = []
    monkeypatch.setattr(ct_widget, "report_error", lambda err, where="": errors.append(str(err)))

    def fail(self, source):  # what torch raises for a checkpoint that does not fit the network
        raise RuntimeError("Error(s) in loading state_dict (simulated)")

    monkeypatch.setattr(CTWidget, "_load_runner", fail)
    _classify(widget, qtbot)  # the run ends (a RuntimeError used to leave it running)
    assert widget.status.value.startswith("Failed: RuntimeError: Error(s) in loading")
    assert errors and "simulated" in errors[0]
    assert widget.decision.value == "no decision: the classification failed"
    assert widget.result is None and widget.plot.curve.get_data()[0].size == 0
    widget.threshold.value = 0.0  # nothing to decide from
    assert widget.decision.value == "no decision: the classification failed"
