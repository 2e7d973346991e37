"""Run folder layout, atomic writes and the pickle-free training state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from training.runfolder import (
    RunFolder,
    StateError,
    atomic_write_json,
    decode_state,
    encode_state,
    load_training_state,
    save_training_state,
)


def test_layout(tmp_path):
    run = RunFolder(tmp_path / "r").create()
    assert run.checkpoints.is_dir() and run.state_dir.is_dir() and run.plots.is_dir()
    assert run.best.name == "best" and run.last.parent == run.checkpoints
    assert run.state_tensors.name == "last_state.safetensors"
    assert run.state_json.name == "last_state.json"
    assert (run.history.name, run.metrics.name, run.report.name, run.config.name) == (
        "history.json", "metrics.json", "report.md", "config.json")
    assert not run.has_state()


def test_encode_decode_round_trip_keeps_types():
    state = {"a": torch.arange(3), 1: {"x": (1.5, None, "s")}, "arr": np.ones(2),
             "b": [torch.zeros(2, 2), True], "inf": math.inf}
    tensors: dict = {}
    encoded = encode_state(state, tensors, "s")
    json.dumps(encoded)  # JSON-only structure
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    back = decode_state(json.loads(json.dumps(encoded)), tensors)
    assert torch.equal(back["a"], state["a"]) and back[1] == {"x": (1.5, None, "s")}
    assert np.array_equal(back["arr"], state["arr"]) and back["b"][1] is True
    assert back["inf"] == math.inf


def test_optimizer_and_scheduler_state_round_trip_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step(1.0)
    run = RunFolder(tmp_path).create()
    save_training_state(run, {"epoch": 2, "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict()})
    assert run.has_state()
    assert b"pickle" not in run.state_json.read_bytes()
    state = load_training_state(run)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    opt2.load_state_dict(state["optimizer"])
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(opt2.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    assert state["scheduler"]["best"] == 1.0 and state["epoch"] == 2


def test_mismatched_or_missing_state_is_refused(tmp_path):
    run = RunFolder(tmp_path).create()
    with pytest.raises(FileNotFoundError, match="no training state"):
        load_training_state(run)
    save_training_state(run, {"w": torch.ones(2)})
    data = run.state_tensors.read_bytes()
    run.state_tensors.write_bytes(data[:-1] + b"\x00")
    with pytest.raises(StateError, match="interrupted"):
        load_training_state(run)
    run.state_json.write_text("{}")
    with pytest.raises(StateError, match="not a"):
        load_training_state(run)


def test_atomic_json_leaves_no_temporaries_and_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": np.float32(0.5), "b": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1]}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text())["a"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
