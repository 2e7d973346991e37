"""``--progress jsonl``: Trainer events as JSON lines, then a finished or failed event."""

import io
import json
import math

import numpy as np
import pytest

from napari_neuroseg.models.checkpoint import load_checkpoint
from training import events
from training.cli import build_parser, main
from training.tasks import _common


def _lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event"')]


def test_jsonl_progress_writes_one_strict_json_object_per_line():
    out = io.StringIO()
    progress = events.JsonlProgress(out, interval=0.0)
    progress({"event": "epoch_end", "epoch": np.int64(0), "epochs": 2,
              "train_loss": np.float32(0.5), "val_loss": math.nan, "cm": np.eye(2)})
    progress({"event": "resume", "epoch": 1})
    first, second = out.getvalue().splitlines()
    assert json.loads(first) == {"event": "epoch_end", "epoch": 0, "epochs": 2,
                                 "train_loss": 0.5, "val_loss": None,
                                 "cm": [[1.0, 0.0], [0.0, 1.0]]}
    assert json.loads(second) == {"event": "resume", "epoch": 1}


def test_step_events_are_thinned_but_the_last_step_of_an_epoch_is_kept():
    out = io.StringIO()
    progress = events.JsonlProgress(out, interval=60.0)
    for step in range(10):
        progress({"event": "step", "epoch": 0, "epochs": 1, "step": step, "steps": 10,
                  "loss": 1.0})
    steps = [e["step"] for e in _lines(out.getvalue())]
    assert steps == [0, 9]


def test_installed_sets_current_for_the_block_only():
    assert events.current() is None
    outer, inner = events.JsonlProgress(), events.JsonlProgress()
    with events.installed(outer):
        assert events.current() is outer
        with events.installed(inner):
            assert events.current() is inner
        with events.installed(None):
            assert events.current() is outer
        assert events.current() is outer
    assert events.current() is None


def test_reporting_writes_failed_and_reraises():
    out = io.StringIO()
    with pytest.raises(ValueError, match="no items"):
        with events.reporting("jsonl", out):
            raise ValueError("no items")
    assert _lines(out.getvalue()) == [{"event": "failed", "error": "no items",
                                       "type": "ValueError"}]
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with events.reporting("bar", out) as report:
            assert report.callback is None and events.current() is None
            raise RuntimeError("boom")
    assert out.getvalue() == ""  # the text bar mode writes no events


def test_progress_option_is_offered_with_bar_as_default():
    parser = build_parser()
    assert parser.parse_args(["mri", "--data", "d"]).progress == "bar"
    assert parser.parse_args(["mri", "--data", "d", "--progress", "jsonl"]).progress == "jsonl"
    with pytest.raises(SystemExit):
        parser.parse_args(["mri", "--data", "d", "--progress", "xml"])


@pytest.fixture(scope="module")
def dataset(tiny_lgg_dataset):
    return tiny_lgg_dataset


@pytest.fixture
def hooked(monkeypatch):
    """``trainer_options`` with the one line the lead adds: ``on_progress=events.current()``."""
    import training.tasks.mri.task as mri

    original = _common.trainer_options

    def trainer_options(config, dist=None):
        return {**original(config, dist), "on_progress": events.current()}

    monkeypatch.setattr(_common, "trainer_options", trainer_options)
    monkeypatch.setattr(mri, "trainer_options", trainer_options)


def _small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("base_features: 4\nbatch_size: 4\naugment: false\nnum_workers: 0\n")
    return str(path)


def test_one_epoch_mri_run_prints_its_events_then_finished(dataset, tmp_path, capsys, hooked):
    run = tmp_path / "run"
    code = main(["mri", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                 "--device", "cpu", "--config", _small(tmp_path), "--seed", "1",
                 "--progress", "jsonl"])
    assert code == 0
    stdout = capsys.readouterr().out
    got = _lines(stdout)
    kinds = [e["event"] for e in got]
    assert kinds[-2:] == ["epoch_end", "finished"] and set(kinds) == {"step", "epoch_end",
                                                                       "finished"}
    assert kinds.index("step") < kinds.index("epoch_end")
    epoch = got[-2]
    assert epoch["epoch"] == 0 and epoch["epochs"] == 1
    assert epoch["train_loss"] > 0 and 0.0 <= epoch["slice_dice"] <= 1.0
    finished = got[-1]
    assert finished["best"] == str((run / "checkpoints" / "best.safetensors").resolve())
    assert finished["last"] == str((run / "checkpoints" / "last.safetensors").resolve())
    assert finished["metrics"] == json.loads((run / "metrics.json").read_text())
    loaded = load_checkpoint(finished["best"])
    assert loaded.spec.name == "mri-flair-unet" and loaded.spec.arch_kwargs["base_features"] == 4
    assert stdout.rstrip().splitlines()[-1].startswith('{"event":"finished"')  # the last line


def test_bad_data_ends_with_a_failed_event(tmp_path, capsys, hooked):
    with pytest.raises(ValueError, match="no dataset manifest"):
        main(["mri", "--data", str(tmp_path / "nothing"), "--epochs", "1", "--device", "cpu",
              "--progress", "jsonl"])
    got = _lines(capsys.readouterr().out)
    assert len(got) == 1 and got[0]["event"] == "failed"
    assert "no dataset manifest" in got[0]["error"]


def test_default_progress_prints_no_events(dataset, tmp_path, capsys, hooked):
    main(["mri", "--data", str(dataset), "--out", str(tmp_path / "run"), "--epochs", "1",
          "--device", "cpu", "--config", _small(tmp_path)])
    captured = capsys.readouterr()
    assert _lines(captured.out) == [] and "epoch 1/1 done" in captured.err
