"""Precise batch-norm statistics: recompute the running means and variances after training.

During training a batch norm's running statistics are an exponential average over batches
seen under *earlier* weights (Keras' momentum 0.99, which the GBM_WSSM FC-DenseNet keeps, looks
back about a hundred steps), and with dropout on. In a short run with a large learning rate the
network then behaves differently in evaluation mode than it did in training. Recomputing the
statistics with the final weights, as a plain average over a pass of training batches with
dropout off (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021), removes that gap. The
learnt weights are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable, device: torch.device | str,
                          max_batches: int | None = None) -> int:
    """Replace every batch norm's running statistics by their average over ``batches``.

    The rest of the model runs in evaluation mode (no dropout); the model is left in
    evaluation mode with each norm's momentum restored.

    Parameters
    ----------
    model : torch.nn.Module
    batches : iterable
        Items whose first element is an input batch (``(x, y)`` from a ``DataLoader``).
    device : torch.device or str
    max_batches : int, optional
        Stop after this many batches.

    Returns
    -------
    int
        Batches used (0 when the model has no batch norm or ``batches`` is empty, and then
        nothing changes).
    """
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(),
              m.momentum) for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    used = 0
    memory = torch.channels_last if _is_channels_last(model) else torch.contiguous_format
    with torch.no_grad():
        for batch in batches:
            if max_batches is not None and used >= max_batches:
                break
            x = batch[0] if isinstance(batch, list | tuple) else batch
            model(x.to(device).contiguous(memory_format=memory))
            used += 1
    for norm, (mean, var, count, momentum) in zip(norms, saved, strict=True):
        norm.momentum = momentum
        norm.eval()
        if used == 0:
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(count)
    return used


def _is_channels_last(model: nn.Module) -> bool:
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous()
