"""Seeding for reproducible runs: Python, NumPy and torch at the start of a run and of every
epoch (:func:`seed_everything`), and DataLoader workers (:func:`seed_worker`). See the
determinism rules in docs/training-loop.md.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "seed_worker"]


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code draws from the global RNG
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: seeds NumPy and ``random`` from torch's worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - the global RNG is what augmentations use
    random.seed(seed)
