"""Patient-level pooling of slice logits (the CT metastasis recipe's MAX pooling): a patient's
logit is the maximum of its slices' logits, positive if any slice is.

:func:`patient_max_pool` gives ``{patient: logit}`` for evaluation; :func:`patient_max_pool_tensor`
is its differentiable form for patient-level losses.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch


def patient_max_pool(
    slice_logits: Sequence[float] | np.ndarray | torch.Tensor, patient_ids: Sequence[Hashable]
) -> dict[Hashable, float]:
    """Patient logit = maximum of its slice logits (the CT metastasis recipe's MAX pooling).

    Parameters
    ----------
    slice_logits : array-like, shape (n_slices,) or (n_slices, 1)
    patient_ids : sequence
        Patient of each slice (any hashable), same length.

    Returns
    -------
    dict
        ``{patient: max logit}`` in order of first appearance.
    """
    logits = np.asarray(
        slice_logits.detach().cpu() if isinstance(slice_logits, torch.Tensor) else slice_logits,
        dtype=np.float64,
    ).reshape(-1)
    ids = list(patient_ids)
    if len(ids) != logits.size:
        raise ValueError(f"{logits.size} slice logits but {len(ids)} patient ids")
    pooled: dict[Hashable, float] = {}
    for pid, value in zip(ids, logits, strict=True):
        pooled[pid] = max(pooled.get(pid, -np.inf), float(value))
    return pooled


def patient_max_pool_tensor(
    slice_logits: torch.Tensor, patient_index: torch.Tensor, n_patients: int | None = None
) -> torch.Tensor:
    """Differentiable max over the slices of each patient (for patient-level losses).

    Parameters
    ----------
    slice_logits : Tensor, shape (n_slices,) or (n_slices, 1)
    patient_index : Tensor of int, shape (n_slices,)
        Patient number ``0 .. n_patients - 1`` of each slice.
    n_patients : int, optional
        Defaults to ``patient_index.max() + 1``.

    Returns
    -------
    Tensor, shape (n_patients,)
        The gradient flows to the maximal slice of each patient only. A patient without
        slices gets ``-inf``.
    """
    logits = slice_logits.reshape(-1)
    index = patient_index.reshape(-1).to(device=logits.device, dtype=torch.long)
    if index.numel() != logits.numel():
        raise ValueError(f"{logits.numel()} slice logits but {index.numel()} patient indices")
    if index.numel() and int(index.min()) < 0:
        raise ValueError("patient indices must be >= 0")
    if n_patients is None:
        n_patients = int(index.max()) + 1 if index.numel() else 0
    out = logits.new_full((int(n_patients),), float("-inf"))
    if index.numel() and int(index.max()) >= n_patients:
        raise ValueError(f"patient index {int(index.max())} >= n_patients {n_patients}")
    return out.scatter_reduce(0, index, logits, reduce="amax", include_self=True)
