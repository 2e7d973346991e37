"""TrainJob: the exact command, a real ``python -m training`` child process, its events, cancel."""

import os
import shlex
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from napari_neuroseg.annotate.trainjob import (
    TrainJob,
    dataset_task,
    default_run_folder,
    parse_event,
    parse_options,
    training_launcher,
)
from napari_neuroseg.models.checkpoint import load_checkpoint

# ignores SIGTERM and keeps a grandchild in its process group: only SIGKILL of the group ends it
STUBBORN = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(json.dumps({"event": "step", "epoch": 0, "epochs": 1, "step": 0, "steps": 9,
                      "loss": 1.0, "grandchild": child.pid}), flush=True)
    time.sleep(120)
""")


@pytest.fixture(scope="module")
def dataset(tiny_lgg_dataset):
    return tiny_lgg_dataset


SMALL = "base_features: 4\nbatch_size: 4\naugment: false\nnum_workers: 0\n"


def test_command_is_the_exact_argv_and_a_copyable_shell_line(tmp_path):
    job = TrainJob("mri", tmp_path / "my data", init=tmp_path / "model.safetensors",
                   out=tmp_path / "run", epochs=3, device="cuda", extra_config=SMALL)
    data, run = str((tmp_path / "my data").absolute()), str((tmp_path / "run").absolute())
    init, options = str((tmp_path / "model.safetensors").absolute()), f"{run}/train-options.yaml"
    assert job.command() == [*training_launcher(), "mri", "--data", data,
                             "--init", init, "--out", run, "--epochs", "3", "--device", "cuda",
                             "--config", options, "--progress", "jsonl"]
    shell = job.shell_command()
    assert shlex.split(shell) == ["python", "-m", "training", "mri", "--data", data, "--init",
                                  init, "--out", run, "--epochs", "3", "--device", "cuda",
                                  "--config", options]
    assert "'" in shell  # the space in "my data" is quoted
    bare = TrainJob("ct", tmp_path / "d", out=tmp_path / "r")
    assert bare.command()[len(training_launcher()):] == [
        "ct", "--data", str((tmp_path / "d").absolute()), "--out",
        str((tmp_path / "r").absolute()), "--progress", "jsonl"]


def test_invalid_inputs_are_refused_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="unknown training task 'segment'"):
        TrainJob("segment", tmp_path)
    with pytest.raises(ValueError, match="dataset folder"):
        TrainJob("mri", "")
    with pytest.raises(ValueError, match="not valid YAML"):
        TrainJob("mri", tmp_path, extra_config="a: [1, 2")
    with pytest.raises(ValueError, match="YAML mapping"):
        parse_options("- 1\n- 2\n")
    assert parse_options("") == {} and parse_options("# nothing\n") == {}
    assert parse_options("lr: 0.001\nbase_features: 8\n") == {"lr": 0.001, "base_features": 8}


def test_default_run_folder_and_dataset_task(tmp_path, dataset):
    now = datetime(2024, 5, 6, 7, 8, 9)
    assert default_run_folder(tmp_path / "export", "mri", now) == \
        tmp_path / "runs" / "mri-20240506-070809"
    assert TrainJob("mri", tmp_path / "export").out.parent == tmp_path / "runs"
    assert dataset_task(dataset) == "mri"
    assert dataset_task(tmp_path) is None


def test_parse_event_keeps_only_event_objects():
    assert parse_event('{"event": "step", "loss": 1}\n') == {"event": "step", "loss": 1}
    for line in ("effective configuration (mri):", "{", '  "dice": 0.5,', "0.5", "[1]",
                 '{"dice": 0.5}', '{"event": 3}', ""):
        assert parse_event(line) is None


def test_a_real_run_streams_its_events_and_finishes_with_a_loadable_checkpoint(tmp_path,
                                                                               dataset):
    job = TrainJob("mri", dataset, out=tmp_path / "run", epochs=2, device="cpu",
                   extra_config=SMALL)
    got = list(job.events())
    kinds = [e["event"] for e in got]
    assert kinds[-1] == "finished" and kinds.count("finished") == 1
    ends = [e for e in got if e["event"] == "epoch_end"]
    assert [(e["epoch"], e["epochs"]) for e in ends] == [(0, 2), (1, 2)]
    assert kinds.index("step") < kinds.index("epoch_end")
    assert all(e["train_loss"] > 0 for e in ends)
    assert job.returncode == 0 and not job.running
    assert job.best_checkpoint == (tmp_path / "run" / "checkpoints" / "best.safetensors")
    loaded = load_checkpoint(job.best_checkpoint)
    assert loaded.spec.arch_kwargs["base_features"] == 4
    assert got[-1]["metrics"]["val_patients"] == 1
    log = job.log_path.read_text()
    assert "effective configuration (mri)" in log  # stdout text went to the log
    assert "--progress jsonl" in log.splitlines()[0]
    assert '"event"' not in log
    assert (tmp_path / "run" / "train-options.yaml").read_text().startswith("base_features: 4")


def test_bad_data_ends_with_the_error(tmp_path):
    job = TrainJob("mri", tmp_path / "missing", out=tmp_path / "run", epochs=1, device="cpu")
    got = list(job.events())
    assert [e["event"] for e in got] == ["failed"]
    assert "no dataset manifest" in got[0]["error"]
    assert job.returncode == 1 and job.best_checkpoint is None
    assert "Traceback" in job.log_path.read_text()


def test_a_process_that_dies_silently_gets_a_failed_event_with_the_log_tail(tmp_path):
    script = "import sys; print('hello'); sys.stderr.write('CUDA out of memory\\n'); sys.exit(3)"
    job = TrainJob("mri", tmp_path, out=tmp_path / "run", launcher=(sys.executable, "-c",
                                                                   script))
    got = list(job.events())
    assert len(got) == 1 and got[0]["event"] == "failed" and got[0]["returncode"] == 3
    assert "CUDA out of memory" in got[0]["error"] and "hello" in job.log_path.read_text()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_cancel_kills_the_whole_process_group_quickly(tmp_path):
    job = TrainJob("mri", tmp_path, out=tmp_path / "run",
                   launcher=(sys.executable, "-c", STUBBORN))
    stream = job.events()
    first = next(stream)
    grandchild = first["grandchild"]
    assert job.running and _alive(grandchild)
    started = time.monotonic()
    job.cancel(grace=0.5)
    elapsed = time.monotonic() - started
    rest = list(stream)
    assert elapsed < 3.0
    assert [e["event"] for e in rest] == ["cancelled"]
    assert job.returncode == -9 and not job.running
    deadline = time.monotonic() + 3
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_cancel_without_blocking_returns_at_once(tmp_path):
    job = TrainJob("mri", tmp_path, out=tmp_path / "run",
                   launcher=(sys.executable, "-c", "import time; time.sleep(60)"))
    job.start()
    started = time.monotonic()
    job.cancel(grace=5.0, block=False)
    assert time.monotonic() - started < 0.5
    assert [e["event"] for e in job.events()] == ["cancelled"]
    assert job.returncode == -15


def test_cancel_before_start_means_it_never_starts(tmp_path):
    job = TrainJob("mri", tmp_path, out=tmp_path / "run",
                   launcher=(sys.executable, "-c", "import time; time.sleep(60)"))
    job.cancel()
    assert [e["event"] for e in job.events()] == ["cancelled"]
    assert job.process is None and job.returncode is None
    with pytest.raises(RuntimeError, match="cancelled before it started"):
        job.start()


def test_the_default_launcher_keeps_the_working_directory_off_sys_path():
    launcher = training_launcher()
    assert launcher[0] == sys.executable and launcher[-2:] == ("-m", "training")
    assert ("-P" in launcher) == (sys.version_info >= (3, 11))
