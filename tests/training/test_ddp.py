"""DDP: two CPU processes on gloo under torchrun end with identical weights; rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from training.ddp import (
    DistInfo,
    distributed_loader,
    init_distributed,
    reduce_mean_metrics,
    reduce_sum,
    wrap_model,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("tiny_run.py")


def test_single_process_defaults_are_no_ops():
    info = init_distributed("cpu", env={})
    assert info == DistInfo() and info.is_main and not info.distributed
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, torch.device("cpu"), info) is model
    loader = DataLoader(TensorDataset(torch.arange(10.0)), batch_size=2)
    assert distributed_loader(loader, info) is loader
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(reduce_sum(t, info), t)
    assert reduce_mean_metrics({"a": 1.0}, info) == {"a": 1.0}


def test_distributed_loader_shards_without_overlap():
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=2, shuffle=True)
    seen = []
    for rank in (0, 1):
        info = DistInfo(rank=rank, world_size=2)
        shard = distributed_loader(loader, info, seed=0)
        assert shard.sampler.num_replicas == 2 and shard.batch_size == 2
        seen.append({int(v) for (batch,) in shard for v in batch})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(10))


def test_torchrun_two_gloo_processes_train_identically(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), str(run), "2", "--ddp"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    w0 = load_file(str(run / "rank0_weights.safetensors"))
    w1 = load_file(str(run / "rank1_weights.safetensors"))
    saved = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert set(w0) == set(w1) == set(saved)
    assert all(torch.equal(w0[k], w1[k]) and torch.equal(w0[k], saved[k]) for k in w0)
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [0, 1]
    assert not list(run.rglob(".*.tmp"))
