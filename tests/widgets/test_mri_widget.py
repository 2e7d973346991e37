"""The MRI widget driven like a user would: open a stack, segment it, clean up, read the volume."""

import dataclasses
import shutil
import time

import numpy as np
import pytest

from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.mri import (
    mri_phantom,
    write_lgg_patient,
    write_nifti_volume,
    write_tiff_stack,
)
from napari_neuroseg.widgets._model_picker import FROM_FILE
from napari_neuroseg.widgets.mri_widget import MRIWidget

pytestmark = pytest.mark.gui
PLUGIN = "napari-neuroseg"
TIMEOUT = 30000


def threshold_model(delay: float = 0.0, calls: list | None = None):
    """A loader for a deterministic stand-in of mri-flair-unet: lesion where FLAIR > 170.

    The phantom's lesion is the only tissue that bright on FLAIR (channel 1), so it returns
    the known mask exactly, and only when the channels arrive in file order.
    """
    spec = ModelRegistry().get("mri-flair-unet")

    def predict(batch: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(batch.shape)
        time.sleep(delay)
        lesion = (batch[:, 1] > 170).astype(np.float32)
        return np.stack([1 - lesion, lesion], axis=1)

    return lambda source: (predict, spec)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def no_cleanup(widget):
    """Clean-up off (the shipped weights bring theirs as the default): raw results."""
    widget.min_size.value = 0.0
    widget.single_slice.value = False
    return widget


@pytest.fixture
def widget(viewer):
    w = no_cleanup(MRIWidget(viewer))
    viewer.window.add_dock_widget(w)
    return w


def _segment(widget, qtbot):
    widget.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.volume.value != "", timeout=TIMEOUT)


def _volume_after(widget, qtbot, change):
    before = widget.last_measure
    change()
    qtbot.waitUntil(lambda: widget.last_measure is not before, timeout=TIMEOUT)
    qtbot.wait(50)  # a second option change may follow: let the latest result land
    return widget.last_measure


def test_lgg_patient_segments_to_the_known_mask_with_its_volume(viewer, widget, qtbot, tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id="TCGA_XX_0001_20000101", n_slices=10,
                               size=64, seed=1)
    viewer.open(str(folder), plugin=PLUGIN)
    pid = folder.name
    # one entry for the patient, named by the three sequences it stacks
    assert [title for title, _ in widget._stack_choices()] == [
        f"{pid} (pre-contrast + FLAIR + post-contrast)"]
    widget.layer.value = viewer.layers[f"{pid} FLAIR"]  # any channel selects the stack
    assert widget.layer.value is viewer.layers[f"{pid} pre-contrast"]
    assert widget.layer.native.currentText() == f"{pid} (pre-contrast + FLAIR + post-contrast)"
    calls: list = []
    widget.load_model = threshold_model(calls=calls)
    _segment(widget, qtbot)
    mask = np.asarray(viewer.layers[f"{pid} FLAIR abnormality"].data)
    assert mask.sum() > 50
    labels, heat = widget.labels_layer, widget.heatmap_layer
    np.testing.assert_array_equal(labels.data, mask)
    np.testing.assert_allclose(heat.data, mask, atol=1e-5)
    assert all(shape[1] == 3 for shape in calls)  # pre-contrast, FLAIR, post-contrast stacked
    source = viewer.layers[f"{pid} FLAIR"]
    for layer in (labels, heat):
        np.testing.assert_allclose(layer.scale, source.scale)
        np.testing.assert_allclose(layer.translate, source.translate)
    assert tuple(heat.contrast_limits) == (0.0, 1.0)
    assert list(labels.features["class"]) == ["background", "FLAIR abnormality"]
    np.testing.assert_allclose(labels.colormap.map(1)[:3], (1.0, 0xD7 / 255, 0.0), atol=0.01)
    assert labels.colormap.map(0)[3] == 0  # background transparent
    assert widget.progress.value == 10 and widget.status.value == "Segmented 10 slices"
    expected = f"{mask.sum() * 0.001:.3f} ml ({mask.sum()} voxels of 1 mm³)"
    assert expected in widget.volume.value and "voxel size unknown" in widget.volume.value
    # the widget's own layers are never offered as input
    assert heat not in [v for _, v in widget._stack_choices()]


def _stack_with_specks(tmp_path):
    """A 3-channel TIFF stack (2 x 0.5 x 0.5 mm) whose FLAIR has the phantom lesion, a
    one-slice speck (5 x 5) and a small two-slice blob (2 x 2 x 2) far from it."""
    image, mask = mri_phantom(n_slices=8, size=64, seed=2)
    image[6, 2:7, 2:7, 1] = 250
    image[1:3, 58:60, 58:60, 1] = 250
    truth = (mask > 0).astype(np.uint8)
    truth[6, 2:7, 2:7] = 1
    truth[1:3, 58:60, 58:60] = 1
    path = write_tiff_stack(tmp_path / "stack.tif", data=image, spacing=(2.0, 0.5, 0.5))
    return path, truth, int((mask > 0).sum())


def test_cleanup_options_update_labels_and_volume_at_once(viewer, widget, qtbot, tmp_path):
    path, truth, lesion = _stack_with_specks(tmp_path)
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 3
    widget.layer.value = layers[1]
    widget.load_model = threshold_model()
    _segment(widget, qtbot)
    voxel = 2.0 * 0.5 * 0.5 / 1000
    np.testing.assert_array_equal(widget.labels_layer.data, truth)
    assert f"{truth.sum() * voxel:.3f} ml" in widget.volume.value
    out = _volume_after(widget, qtbot, lambda: setattr(widget.single_slice, "value", True))
    assert out["voxels"] == lesion + 8 and out["cleanup"].n_single_slice == 1
    assert widget.labels_layer.data[6, 2:7, 2:7].sum() == 0
    assert f"Tumour volume: {(lesion + 8) * voxel:.3f} ml" in widget.volume.value
    assert f"before clean-up {truth.sum() * voxel:.3f} ml" in widget.volume.value

    def voxels_option():
        widget.size_unit.value = "voxels"
        widget.min_size.value = 9
    out = _volume_after(widget, qtbot, voxels_option)
    assert out["voxels"] == lesion and out["min_voxels"] == 9
    np.testing.assert_array_equal(widget.labels_layer.data, mri_mask(8) > 0)
    assert f"Tumour volume: {lesion * voxel:.3f} ml" in widget.volume.value

    def back_to_raw():
        widget.single_slice.value = False
        widget.min_size.value = 0
    out = _volume_after(widget, qtbot, back_to_raw)
    assert out["voxels"] == truth.sum()
    np.testing.assert_array_equal(widget.labels_layer.data, truth)


def mri_mask(n_slices: int) -> np.ndarray:
    return mri_phantom(n_slices=n_slices, size=64, seed=2)[1]


def test_cancel_stops_the_worker_and_keeps_the_partial_result(viewer, widget, qtbot, tmp_path):
    folder = write_lgg_patient(tmp_path, n_slices=16, size=32, seed=4)
    viewer.open(str(folder), plugin=PLUGIN)
    widget.layer.value = viewer.layers[f"{folder.name} FLAIR"]
    calls: list = []
    widget.load_model = threshold_model(delay=0.3, calls=calls)
    widget.planes_per_step = 1
    beats = _heartbeat(widget)
    widget.segment_button.clicked.emit()
    assert widget.cancel_button.enabled and not widget.segment_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=TIMEOUT)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    n_calls = len(calls)
    qtbot.wait(700)
    assert len(calls) == n_calls < 16  # nothing runs after the cancel
    done = widget.progress.value
    assert 1 <= done < 16 and widget.segment_button.enabled and not widget.cancel_button.enabled
    qtbot.waitUntil(lambda: "partial" in widget.volume.value, timeout=TIMEOUT)
    assert f"partial: {done} of 16 slices" in widget.volume.value
    assert not widget.labels_layer.data[done:].any() and not widget.heatmap_layer.data[done:].any()
    stall = max(np.diff(beats)) if len(beats) > 1 else 0.0
    print(f"longest event-loop stall while segmenting: {stall * 1000:.0f} ms")
    assert stall < 0.5  # ~100 ms on an idle machine; generous for loaded 2-core CI


def _heartbeat(widget) -> list:
    """Times of a 10 ms QTimer's ticks (gaps show how long the event loop was blocked)."""
    from qtpy.QtCore import QTimer

    beats: list = []
    timer = QTimer(widget.native)
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    return beats


def tiny_checkpoint(folder, channels: tuple[str, ...], patch: int):
    """A 2-floor, 4-feature U-Net checkpoint (random weights) shaped like mri-flair-unet."""
    from napari_neuroseg.models.checkpoint import save_checkpoint

    registry = ModelRegistry()
    base = registry.get("mri-flair-unet")
    spec = dataclasses.replace(
        base, name="tiny-flair",
        extra={k: v for k, v in base.extra.items()  # not the shipped weights' provenance
               if k not in ("postprocess", "postprocess_selection", "training_patients")},
        arch_kwargs={**base.arch_kwargs, "in_channels": len(channels), "depth": 2,
                     "base_features": 4},
        input=dataclasses.replace(base.input, channels=channels, patch_size=(patch, patch)))
    return save_checkpoint(folder / "tiny", registry.build(spec), spec)


def _choose_checkpoint(widget, checkpoint):
    widget.picker.model.value = FROM_FILE
    widget.picker.file.value = checkpoint
    widget.picker.device.value = "cpu"


def test_tiny_checkpoint_on_a_nifti_volume_is_aligned(viewer, widget, qtbot, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path, ("FLAIR",), 32)
    path = write_nifti_volume(tmp_path / "flair.nii.gz", n_slices=6, size=40,
                              zooms=(1.0, 1.0, 2.5))
    (source,) = viewer.open(str(path), plugin=PLUGIN)
    widget.layer.value = source
    _choose_checkpoint(widget, checkpoint)
    _segment(widget, qtbot)
    labels, heat = widget.labels_layer, widget.heatmap_layer
    assert labels.data.shape == heat.data.shape == source.data.shape
    for layer in (labels, heat):
        np.testing.assert_allclose(layer.scale, source.scale)
        np.testing.assert_allclose(layer.translate, source.translate)
    assert 0.0 <= heat.data.min() and heat.data.max() <= 1.0
    np.testing.assert_array_equal(labels.data, heat.data >= 0.5)
    ml = np.count_nonzero(labels.data) * np.prod(source.scale) / 1000
    assert f"Tumour volume: {ml:.3f} ml" in widget.volume.value


def test_model_and_stack_mismatch_is_reported_and_widget_stays_usable(viewer, widget, qtbot,
                                                                      tmp_path):
    path = write_nifti_volume(tmp_path / "flair.nii", n_slices=4, size=32)
    (source,) = viewer.open(str(path), plugin=PLUGIN)
    widget.layer.value = source
    widget.picker.model.value = "mri-flair-unet"
    widget.picker.device.value = "cpu"
    widget.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert "expects 3 channel(s)" in widget.status.value
    assert widget.segment_button.enabled and widget.volume.value == ""
    widget.load_model = threshold_model()  # a 3-channel model still fails, a clean message
    widget.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget.status.value.startswith("Failed")


def test_layer_choices_follow_the_viewer_and_close_disconnects(viewer, qtbot):
    widget = no_cleanup(MRIWidget(viewer))
    assert widget.layer.value is None
    layer = viewer.add_image(np.zeros((3, 8, 8), np.float32), name="stack")
    assert widget.layer.value is layer
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="photo", rgb=True)
    assert [name for name, _ in widget._stack_choices()] == ["stack"]
    widget.close()
    viewer.layers.remove(layer)
    assert "stack" in [getattr(c, "name", c) for c in widget.layer.choices]


@pytest.mark.realdata
def test_real_lgg_slices_are_stacked_segmented_and_measured(viewer, widget, qtbot, shared_data,
                                                           tmp_path):
    folder = shared_data / "lgg_mri_slices"
    if not folder.is_dir():
        pytest.skip("no lgg_mri_slices in the shared data")
    pid = "TCGA_CS_4942_19970222"  # two slices; copied alone (the folder holds 21 patients)
    files = sorted(folder.glob(f"{pid}_*.tif"))
    if not files:
        pytest.skip(f"{pid} not in {folder}")
    patient = tmp_path / pid
    patient.mkdir()
    for file in files:
        shutil.copy(file, patient / file.name)
    viewer.open(str(patient), plugin=PLUGIN)
    source = viewer.layers[f"{pid} FLAIR"]
    widget.layer.value = source
    # the registry U-Net (32 features, 5 floors) takes ~1-2 s a slice on 2 cores; a tiny
    # 3-channel checkpoint exercises the same path: stacking, tiles, layers, volume
    _choose_checkpoint(widget, tiny_checkpoint(tmp_path, ("pre-contrast", "FLAIR",
                                                          "post-contrast"), 256))
    _segment(widget, qtbot)
    labels, heat = widget.labels_layer, widget.heatmap_layer
    assert labels.data.shape == source.data.shape and heat.data.shape == source.data.shape
    np.testing.assert_allclose(labels.scale, source.scale)
    assert 0.0 <= heat.data.min() and heat.data.max() <= 1.0
    ml = np.count_nonzero(labels.data) * 0.001
    assert f"Tumour volume: {ml:.3f} ml" in widget.volume.value
    assert "voxel size unknown" in widget.volume.value


def _segmented_specks(make_napari_viewer, qtbot, tmp_path):
    """A shown viewer with the specks stack segmented (clean-up off): viewer, widget, truth,
    lesion voxels."""
    viewer = make_napari_viewer(show=True)
    widget = no_cleanup(MRIWidget(viewer))
    viewer.window.add_dock_widget(widget)
    path, truth, lesion = _stack_with_specks(tmp_path)
    layers = viewer.open(str(path), plugin=PLUGIN)
    widget.layer.value = layers[1]
    widget.load_model = threshold_model()
    _segment(widget, qtbot)
    return viewer, widget, truth, lesion


def test_cleanup_keeps_painted_corrections_and_is_one_undo_step(make_napari_viewer, qtbot,
                                                                 tmp_path):
    """Issue 12, items 6 and 7: paint on the segmentation, tick "Drop components on a single
    slice": the painted voxels stay, and Ctrl+Z / Ctrl+Shift+Z undo and redo the clean-up."""
    viewer, widget, truth, lesion = _segmented_specks(make_napari_viewer, qtbot, tmp_path)
    layer = widget.labels_layer
    np.testing.assert_array_equal(layer.data, truth)
    # the user's corrections: a brush stroke on slice 3 (a one-slice lesion the model missed)
    # and an erased false positive (the two-slice blob), as strokes record them
    viewer.layers.selection.active = layer
    viewer.dims.set_current_step(0, 3)
    layer.brush_size = 5
    layer.paint((3, 50, 10), 1)
    painted = layer.data[3] & ~truth[3].astype(bool)
    assert painted.sum() >= 9 and not truth[3, 48:53, 8:13].any()
    zs, ys, xs = np.nonzero(truth[:, 56:62, 56:62])
    layer.data_setitem((zs, ys + 56, xs + 56), 0)
    corrected = np.array(layer.data, copy=True)
    strokes = len(layer._undo_history)

    out = _volume_after(widget, qtbot, lambda: setattr(widget.single_slice, "value", True))
    # the model's own one-slice speck is dropped; the painted one-slice lesion stays
    assert widget.labels_layer is layer and layer.data[6, 2:7, 2:7].sum() == 0
    np.testing.assert_array_equal(layer.data[3], corrected[3])
    assert not layer.data[1:3, 56:62, 56:62].any()  # the erased blob stays erased
    assert out["voxels"] == lesion + int(painted.sum()) == int(np.count_nonzero(layer.data))
    assert len(layer._undo_history) == strokes + 1  # the clean-up is one step; strokes kept

    layer.undo()  # Ctrl+Z: the labels as they were before the clean-up
    np.testing.assert_array_equal(layer.data, corrected)
    layer.redo()  # Ctrl+Shift+Z
    assert layer.data[6, 2:7, 2:7].sum() == 0 and layer.data[3].sum() == corrected[3].sum()
    layer.undo()
    layer.undo()  # the erasure
    layer.undo()  # the brush stroke
    np.testing.assert_array_equal(layer.data, truth)


def test_loosening_cleanup_brings_back_the_model_voxels_but_not_erased_ones(
        make_napari_viewer, qtbot, tmp_path):
    _viewer, widget, truth, _lesion = _segmented_specks(make_napari_viewer, qtbot, tmp_path)
    _volume_after(widget, qtbot, lambda: setattr(widget.single_slice, "value", True))
    layer = widget.labels_layer
    assert layer.data[6, 2:7, 2:7].sum() == 0
    zs, ys, xs = np.nonzero(truth[:, 56:62, 56:62])
    layer.data_setitem((zs, ys + 56, xs + 56), 0)  # erase the blob after the clean-up
    _volume_after(widget, qtbot, lambda: setattr(widget.single_slice, "value", False))
    assert layer.data[6, 2:7, 2:7].sum() == 25  # the speck the option dropped is back
    assert not layer.data[1:3, 56:62, 56:62].any()  # the erasure is kept


def test_result_layers_record_the_weights_file_that_ran(viewer, widget, qtbot, tmp_path):
    folder = write_lgg_patient(tmp_path, n_slices=4, size=32, seed=7)
    viewer.open(str(folder), plugin=PLUGIN)
    widget.picker.model.value = "mri-flair-unet"  # a registry model: its shipped weights run
    widget.load_model = threshold_model()
    _segment(widget, qtbot)
    shipped = ModelRegistry().checkpoint("mri-flair-unet")
    assert shipped is not None and shipped.is_file()
    for layer in (widget.labels_layer, widget.heatmap_layer):
        meta = layer.metadata["neuroseg"]
        assert meta["checkpoint"] == str(shipped.absolute())
        assert meta["model"] == "mri-flair-unet" and meta["result_of"] == "MRI"
        assert meta["modality"] == "result"
    checkpoint = tiny_checkpoint(tmp_path, ("pre-contrast", "FLAIR", "post-contrast"), 32)
    _choose_checkpoint(widget, checkpoint)  # a user's file
    _segment(widget, qtbot)
    assert widget.labels_layer.metadata["neuroseg"]["checkpoint"] == str(checkpoint.absolute())


def _failing_model(after_planes: int):
    """A loader whose model fails once it has seen ``after_planes`` planes (0: fails to load)."""
    spec = ModelRegistry().get("mri-flair-unet")
    seen = [0]

    def predict(batch: np.ndarray) -> np.ndarray:
        if seen[0] >= after_planes:
            raise RuntimeError("CUDA out of memory (simulated)")
        seen[0] += len(batch)
        lesion = (batch[:, 1] > 170).astype(np.float32)
        return np.stack([1 - lesion, lesion], axis=1)

    def load(source):
        if after_planes == 0:
            raise RuntimeError("checkpoint does not fit the network (simulated)")
        return predict, spec

    return load


def test_a_failed_run_does_not_leave_the_previous_patients_result_on_screen(
        viewer, widget, qtbot, tmp_path):
    first = write_lgg_patient(tmp_path, patient_id="TCGA_XX_0001_20000101", n_slices=6,
                              size=32, seed=1)
    second = write_lgg_patient(tmp_path, patient_id="TCGA_XX_0002_20000101", n_slices=8,
                               size=48, seed=2)
    viewer.open(str(first), plugin=PLUGIN)
    widget.layer.value = viewer.layers[f"{first.name} FLAIR"]
    widget.load_model = threshold_model()
    _segment(widget, qtbot)
    labels, heat = widget.labels_layer, widget.heatmap_layer
    assert labels.data.any() and widget.volume.value.startswith("Tumour volume")
    viewer.open(str(second), plugin=PLUGIN)
    widget.layer.value = viewer.layers[f"{second.name} FLAIR"]
    widget.load_model = _failing_model(0)  # the model fails to load: nothing is segmented
    widget.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget.status.value.startswith("Failed after 0 of 8 slices (no result)")
    assert widget.labels_layer is labels and labels in viewer.layers
    for layer in (labels, heat):  # emptied, over the second patient, naming no model
        assert layer.data.shape == (8, 48, 48) and not np.asarray(layer.data).any()
        assert layer.name.startswith(second.name)
        assert layer.metadata["neuroseg"]["checkpoint"] is None
        assert layer.metadata["neuroseg"]["model"] is None
    assert widget.volume.value == ""  # not the first patient's volume either
    widget.load_model = _failing_model(4)  # fails half-way: the partial result is this run's
    widget.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.volume.value != "", timeout=TIMEOUT)
    assert widget.status.value.startswith(
        "Failed after 4 of 8 slices (partial result of 4 of 8 slices shown)"), \
        widget.status.value
    assert "simulated" in widget.status.value and "(partial: 4 of 8" in widget.volume.value
    assert not np.asarray(labels.data[4:]).any()


def test_the_clean_up_saved_with_the_weights_becomes_the_default(widget, tmp_path):
    """A checkpoint with spec.extra['postprocess'] (cv-mri --write) sets the clean-up
    options when chosen; one without leaves them as they are."""
    from training.tasks.nuclei.tune import write_checkpoint

    plain = tiny_checkpoint(tmp_path, ("FLAIR",), 32)
    tuned = write_checkpoint(plain, tmp_path / "tuned", {
        "threshold": 0.5, "min_voxels": 200, "drop_single_slice": True}, {"how": "test"})
    _choose_checkpoint(widget, tuned)
    assert (widget.size_unit.value, widget.min_size.value, widget.single_slice.value) == (
        "voxels", 200.0, True)
    widget.min_size.value = 7.0
    _choose_checkpoint(widget, plain)
    assert (widget.min_size.value, widget.single_slice.value) == (7.0, True)


def test_a_new_widget_starts_on_the_best_shipped_model(viewer):
    """mri-flair-transunet cross-validated best of the FLAIR models (docs/models.md)."""
    if ModelRegistry().checkpoint("mri-flair-transunet") is None:
        pytest.skip("no shipped mri-flair-transunet in this checkout")
    widget = MRIWidget(viewer)
    assert widget.picker.model.value == "mri-flair-transunet"
    assert widget.picker.warning == "" and "trained on real data" in widget.picker.provenance.value


def test_a_new_widget_starts_with_the_shipped_weights_clean_up(viewer):
    """The shipped FLAIR model carries the clean-up its cross-validation chose."""
    widget = MRIWidget(viewer)
    post = widget.picker.source().spec().extra.get("postprocess")
    if widget.picker.random_weights or not post:
        pytest.skip("no shipped FLAIR model with a saved clean-up in this checkout")
    assert (widget.size_unit.value, widget.min_size.value, widget.single_slice.value) == (
        "voxels", float(post["min_voxels"]), post["drop_single_slice"])
