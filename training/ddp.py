"""Distributed data parallel training under ``torchrun`` (gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node N -m training <task> ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them.
Without them everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

__all__ = [
    "DistInfo",
    "cleanup",
    "distributed_loader",
    "init_distributed",
    "reduce_mean_metrics",
    "reduce_sum",
    "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed run (defaults: a single process).

    Attributes
    ----------
    rank, world_size, local_rank : int
    backend : str or None
        ``"gloo"`` or ``"nccl"`` when a process group was initialised.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def init_distributed(device: str = "auto", env: dict[str, str] | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment variables.

    Parameters
    ----------
    device : str
        The requested device; CUDA runs use nccl and bind each process to ``cuda:LOCAL_RANK``,
        everything else uses gloo.
    env : dict, optional
        Environment (default ``os.environ``).

    Returns
    -------
    DistInfo
        Single-process defaults when ``WORLD_SIZE`` is absent or 1.
    """
    env = dict(os.environ if env is None else env)
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=backend)


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(model)`` in a distributed run, else ``model`` itself."""
    if not info.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def distributed_loader(loader: DataLoader, info: DistInfo, *, shuffle: bool = True,
                       seed: int = 0) -> DataLoader:
    """A copy of ``loader`` that gives each rank its own shard.

    A loader whose sampler already knows the ranks (it has ``set_epoch`` and a
    ``num_replicas`` attribute, like a rank-aware oversampler) is returned unchanged;
    otherwise its dataset is re-wrapped with a :class:`DistributedSampler`.
    """
    sampler = loader.sampler
    if not info.distributed or (hasattr(sampler, "set_epoch") and hasattr(sampler,
                                                                          "num_replicas")):
        return loader
    dist_sampler = DistributedSampler(loader.dataset, num_replicas=info.world_size,
                                      rank=info.rank, shuffle=shuffle, seed=seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=dist_sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn)


def reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (a copy; unchanged in a single process)."""
    if not info.distributed:
        return tensor
    out = tensor.detach().clone()
    backend_device = "cuda" if info.backend == "nccl" else "cpu"
    out = out.to(backend_device)
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out.to(tensor.device)


def reduce_mean_metrics(values: dict[str, float], info: DistInfo) -> dict[str, Any]:
    """Average a dict of numbers over ranks (identical keys on every rank)."""
    if not info.distributed:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    summed = reduce_sum(stacked, info) / info.world_size
    return {k: float(v) for k, v in zip(keys, summed, strict=True)}
