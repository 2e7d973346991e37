"""The Train widget driven like a user would: fill the fields, train, watch, cancel, fail."""

import json
import shlex
import shutil
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.mri import write_lgg_patient
from napari_neuroseg.widgets._model_picker import FROM_FILE
from napari_neuroseg.widgets.mri_widget import MRIWidget
from napari_neuroseg.widgets.train_widget import TrainWidget, event_line, layer_checkpoint

pytestmark = pytest.mark.gui
TIMEOUT = 60000

SLOW = textwrap.dedent("""
    import json, time
    print(json.dumps({"event": "step", "epoch": 0, "epochs": 5, "step": 0, "steps": 100,
                      "loss": 0.9}), flush=True)
    time.sleep(120)
""")


@pytest.fixture(scope="module")
def dataset(tiny_lgg_dataset):
    return tiny_lgg_dataset


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer, tmp_path):
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.device.value = "cpu"
    return w


def _wait_done(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_the_command_follows_the_fields(widget, tmp_path, qtbot):
    assert widget.command.value.startswith("# choose the dataset folder")
    widget.data.value = tmp_path / "export"
    widget.out.value = tmp_path / "run"
    widget.epochs.value = 3
    widget.config.value = "base_features: 4\n"
    argv = shlex.split(widget.command.value)
    assert argv == ["python", "-m", "training", "mri", "--data", str(tmp_path / "export"),
                    "--out", str(tmp_path / "run"), "--epochs", "3", "--device", "cpu",
                    "--config", str(tmp_path / "run" / "train-options.yaml")]
    widget.config.value = "a: [1"
    assert "not valid YAML" in widget.command.value
    widget.copy_button.clicked.emit()
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text() == widget.command.value


def test_choosing_a_dataset_sets_the_task_from_its_manifest(widget, dataset, qtbot):
    widget.task.value = "ct"
    widget.data.value = dataset
    qtbot.waitUntil(lambda: widget.task.value == "mri", timeout=5000)
    assert " mri --data " in widget.command.value


def test_start_from_is_prefilled_from_the_layer_that_names_its_checkpoint(viewer, tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    viewer.add_labels(np.zeros((4, 4), np.uint8), metadata={"neuroseg": {
        "checkpoint": str(ckpt)}})
    widget = TrainWidget(viewer)
    assert widget.init.value == ckpt
    assert layer_checkpoint([]) is None
    widget.set_current_model(None)
    assert widget.init.value is None


def test_a_run_streams_progress_log_and_curves_and_offers_its_checkpoint(widget, viewer,
                                                                         dataset, tmp_path,
                                                                         qtbot):
    received = []
    widget.on_checkpoint.append(received.append)
    widget.data.value = dataset
    widget.out.value = tmp_path / "run"
    widget.epochs.value = 2
    widget.config.value = "base_features: 4\nbatch_size: 4\naugment: false\nnum_workers: 0\n"
    seen_values = []
    widget.progress.changed.connect(seen_values.append)
    started = time.monotonic()
    widget.train_button.clicked.emit()
    assert widget.running and not widget.train_button.enabled and widget.cancel_button.enabled
    _wait_done(widget, qtbot)
    elapsed = time.monotonic() - started
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    assert load_checkpoint(best).spec.arch_kwargs["base_features"] == 4
    assert widget.progress.max == 2 and widget.progress.value == 2 and 1 in seen_values
    log = widget.log.value.splitlines()
    assert log[0].startswith("$ python -m training mri --data")
    epochs = [line for line in log if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("epoch 1/2: train_loss ")
    assert "slice_dice" in epochs[1] and log[-1] == f"finished: best checkpoint {best}"
    assert str(best) in widget.checkpoint.value
    # the curves follow the epochs: train loss and the validation metric, one point each
    for name in ("train_loss", "val_loss", "slice_dice"):
        assert list(widget.curves.lines[name].get_xdata()) == [1, 2]
    assert widget.curves.lines["slice_dice"].axes is widget.curves.metric_axes
    assert widget.curves.lines["train_loss"].axes is widget.curves.loss_axes
    # trained from scratch: nothing to compare with, so it is offered, not handed over
    assert received == [] and widget.offered == best and not widget.use_button.native.isHidden()
    assert "starting model was not measured" in widget.compared.value
    assert widget.status.value.startswith("Finished; not handed to the analysis widgets")
    assert widget.init.value is None
    widget.use_button.clicked.emit()
    assert received == [best] and widget.use_button.native.isHidden()
    assert widget.init.value == best  # the next round starts from the new model
    assert widget.train_button.enabled and not widget.cancel_button.enabled
    assert elapsed < 45


def test_a_failing_run_shows_its_error_and_frees_the_widget(widget, tmp_path, qtbot):
    received = []
    widget.on_checkpoint.append(received.append)
    (tmp_path / "not-a-dataset").mkdir()
    widget.data.value = tmp_path / "not-a-dataset"
    widget.out.value = tmp_path / "run"
    widget.epochs.value = 1
    widget.train_button.clicked.emit()
    _wait_done(widget, qtbot)
    assert widget.status.value.startswith("Failed:")
    assert "no dataset manifest" in widget.status.value
    assert "failed: " in widget.log.value and received == []
    assert widget.train_button.enabled and not widget.cancel_button.enabled


def test_cancel_stops_the_run_quickly(widget, tmp_path, qtbot):
    widget.launcher = (sys.executable, "-c", SLOW)
    widget.data.value = tmp_path
    widget.out.value = tmp_path / "run"
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.status.value.startswith("Epoch 1/5, step 1/100"),
                    timeout=TIMEOUT)
    started = time.monotonic()
    widget.cancel_button.clicked.emit()
    _wait_done(widget, qtbot)
    assert time.monotonic() - started < 5
    assert widget.status.value.startswith("Cancelled") and widget.job.returncode == -15
    assert widget.log.value.splitlines()[-1] == "cancelled"


def test_missing_dataset_is_an_error_not_a_run(widget, qtbot):
    widget.train_button.clicked.emit()
    assert not widget.running and widget.status.value.startswith("Failed: choose the dataset")


def test_event_lines():
    assert event_line({"event": "epoch_end", "epoch": 0, "epochs": 3, "train_loss": 0.51234,
                       "val_loss": 0.6, "lr": 1e-4, "seconds": 2.0, "ok": True}) == \
        "epoch 1/3: train_loss 0.5123 val_loss 0.6 (2.0 s)"
    assert event_line({"event": "resume", "epoch": 2}) == "resuming at epoch 3"
    assert event_line({"event": "failed", "error": "x"}) == "failed: x"


def test_closing_disconnects_and_cancels(widget, viewer, tmp_path, qtbot):
    widget.launcher = (sys.executable, "-c", SLOW)
    widget.data.value = tmp_path
    widget.out.value = tmp_path / "run"
    widget.train_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.job is not None and widget.job.running, timeout=TIMEOUT)
    job = widget.job
    widget.close()
    qtbot.waitUntil(lambda: not job.running, timeout=10000)
    viewer.add_labels(np.zeros((4, 4), np.uint8))  # no callback into the closed widget
    assert isinstance(job.out, Path)


DECOY = textwrap.dedent("""
    import json
    print(json.dumps({"event": "failed", "error": "decoy training package ran"}), flush=True)
""")


def test_a_training_folder_in_the_working_directory_cannot_shadow_the_package(
        make_napari_viewer, tmp_path, monkeypatch, qtbot):
    """A user's project folder holding its own ``training/`` package: the run still uses ours."""
    decoy = tmp_path / "project" / "training"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "__main__.py").write_text(DECOY)
    monkeypatch.chdir(decoy.parent)
    viewer = make_napari_viewer(show=True)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    (tmp_path / "not-a-dataset").mkdir()
    widget.data.value = tmp_path / "not-a-dataset"
    widget.out.value = tmp_path / "run"
    widget.device.value = "cpu"
    widget.train_button.clicked.emit()
    _wait_done(widget, qtbot)
    assert "decoy" not in widget.status.value
    assert "no dataset manifest" in widget.status.value  # the real package refused the folder


FAKE_RUN = textwrap.dedent("""
    import json, sys
    def emit(**event):
        print(json.dumps(event), flush=True)
    emit(event="baseline", epoch=-1, epochs=2, monitor="slice_dice", mode="max",
         val_loss=0.40, slice_dice={start})
    emit(event="epoch_end", epoch=0, epochs=2, train_loss=0.9, val_loss=0.5,
         slice_dice={first}, lr=[1e-3], seconds=0.1)
    emit(event="epoch_end", epoch=1, epochs=2, train_loss=0.7, val_loss=0.45,
         slice_dice={new}, lr=[1e-3], seconds=0.1)
    emit(event="finished", best={best!r}, last={best!r}, metrics={{}})
""")


def _fake_checkpoint(folder: Path, start: float, new: float) -> Path:
    """A finished run's best checkpoint (the shipped mri-flair-unet weights) whose sidecar
    records ``new`` against ``start`` on the same split."""
    shipped = ModelRegistry().checkpoint("mri-flair-unet")
    folder.mkdir(parents=True)
    best = folder / "best.safetensors"
    shutil.copyfile(shipped, best)
    sidecar = json.loads(shipped.with_suffix(".json").read_text(encoding="utf-8"))
    sidecar["metrics"] = {"epoch": 1, "slice_dice": new, "monitor": "slice_dice", "mode": "max",
                          "validation": {"val_loss": 0.45, "slice_dice": new},
                          "baseline": {"val_loss": 0.40, "slice_dice": start}}
    best.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    return best


def _fake_run(make_napari_viewer, tmp_path, qtbot, start: float, new: float):
    """A Train widget and a docked MRI widget in a shown viewer, after a fake finished run
    that started from ``start_ckpt`` and scored ``new`` against ``start``."""
    viewer = make_napari_viewer(show=True)
    mri, train = MRIWidget(viewer), TrainWidget(viewer)
    viewer.window.add_dock_widget(mri, name="MRI")
    viewer.window.add_dock_widget(train, name="Train")
    start_ckpt = _fake_checkpoint(tmp_path / "start", 0.6, 0.6)
    best = _fake_checkpoint(tmp_path / "run" / "checkpoints", start, new)
    received = []
    train.on_checkpoint.append(received.append)
    train.launcher = (sys.executable, "-c", FAKE_RUN.format(start=start, first=(start + new) / 2,
                                                            new=new, best=str(best)))
    train.data.value = tmp_path
    train.init.value = start_ckpt
    train.out.value = tmp_path / "run"
    train.device.value = "cpu"
    train.train_button.clicked.emit()
    _wait_done(train, qtbot)
    return viewer, mri, train, received, start_ckpt, best


def test_a_worse_model_is_not_handed_over_but_offered_with_both_numbers(
        make_napari_viewer, tmp_path, qtbot):
    _viewer, mri, train, received, start_ckpt, best = _fake_run(
        make_napari_viewer, tmp_path, qtbot, start=0.6, new=0.1)
    assert train.status.value == ("Finished; not handed to the analysis widgets: worse than "
                                  "the model it started from")
    assert train.compared.value == ("validation slice_dice: new 0.100 vs start 0.600 "
                                    "(higher is better)")
    assert received == [] and mri.picker.model.value == "mri-flair-transunet"  # unchanged
    assert train.init.value == start_ckpt  # the next run still starts from the better one
    assert train.use_button.visible and train.offered == best
    # the curves: two epochs, the starting model's values as dashed reference lines
    dice = train.curves.lines["slice_dice"]
    assert list(dice.get_xdata()) == [1, 2] and list(dice.get_ydata()) == [0.35, 0.1]
    assert list(train.curves.lines["train_loss"].get_ydata()) == [0.9, 0.7]
    reference = train.curves.references["slice_dice"]
    assert list(reference.get_ydata()) == [0.6, 0.6] and reference.get_linestyle() == "--"
    assert reference.axes is train.curves.metric_axes
    assert "starting model: val_loss 0.4 slice_dice 0.6" in train.log.value
    train.use_button.clicked.emit()  # the user's choice
    assert received == [best]
    assert mri.picker.model.value == FROM_FILE and mri.picker.file.value == best
    assert train.init.value == best and not train.use_button.visible
    assert "now used by: MRI" in train.checkpoint.value


def test_a_model_at_least_as_good_is_handed_over(make_napari_viewer, tmp_path, qtbot):
    _viewer, mri, train, received, _start, best = _fake_run(
        make_napari_viewer, tmp_path, qtbot, start=0.6, new=0.7)
    assert train.status.value == "Finished: at least as good as the starting model"
    assert train.compared.value == ("validation slice_dice: new 0.700 vs start 0.600 "
                                    "(higher is better)")
    assert received == [best] and train.init.value == best
    assert mri.picker.model.value == FROM_FILE and mri.picker.file.value == best
    assert not train.use_button.visible and train.offered is None
    assert "now used by: MRI" in train.checkpoint.value


def _stand_in_model(source):
    spec = ModelRegistry().get("mri-flair-unet")

    def predict(batch):
        lesion = (batch[:, 1] > 170).astype(np.float32)
        return np.stack([1 - lesion, lesion], axis=1)

    return predict, spec


def test_start_from_is_the_checkpoint_of_the_selected_or_newest_result(make_napari_viewer,
                                                                       tmp_path, qtbot):
    viewer = make_napari_viewer(show=True)
    mri, train = MRIWidget(viewer), TrainWidget(viewer)
    viewer.window.add_dock_widget(mri)
    viewer.window.add_dock_widget(train)
    assert train.init.value is None
    train.data.value = tmp_path / "export"
    folder = write_lgg_patient(tmp_path, n_slices=4, size=32, seed=3)
    viewer.open(str(folder), plugin="napari-neuroseg")
    mri.picker.model.value = "mri-flair-unet"  # its shipped weights
    mri.load_model = _stand_in_model
    mri.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not mri.running and mri.labels_layer is not None, timeout=TIMEOUT)
    shipped = ModelRegistry().checkpoint("mri-flair-unet")
    assert train.init.value == shipped.absolute()  # shipped weights count too
    assert f"--init {shipped.absolute()}" in train.command.value
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"")
    older = viewer.add_labels(np.zeros((4, 4), np.uint8), name="older result",
                              metadata={"neuroseg": {"checkpoint": str(other)}})
    assert train.init.value == other  # the newest result layer
    viewer.layers.selection.active = mri.labels_layer
    assert train.init.value == shipped.absolute()  # the selected one
    chosen = tmp_path / "chosen.safetensors"
    chosen.write_bytes(b"")
    train.init.value = chosen  # the user's choice is kept
    viewer.layers.selection.active = older
    viewer.add_labels(np.zeros((4, 4), np.uint8), metadata={"neuroseg": {
        "checkpoint": str(other)}})
    assert train.init.value == chosen
