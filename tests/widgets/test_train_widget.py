"""The Train widget driven like a user would: fill the fields, train, watch, cancel, fail."""

import shlex
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_neuroseg.models.checkpoint import load_checkpoint
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


def test_a_run_streams_progress_and_log_and_hands_over_its_checkpoint(widget, viewer, dataset,
                                                                      tmp_path, qtbot):
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
    assert received == [best]
    assert load_checkpoint(received[0]).spec.arch_kwargs["base_features"] == 4
    assert widget.progress.max == 2 and widget.progress.value == 2 and 1 in seen_values
    log = widget.log.value.splitlines()
    assert log[0].startswith("$ python -m training mri --data")
    epochs = [line for line in log if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("epoch 1/2: train_loss ")
    assert "slice_dice" in epochs[1] and log[-1] == f"finished: best checkpoint {best}"
    assert str(best) in widget.checkpoint.value and widget.status.value == "Finished"
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
