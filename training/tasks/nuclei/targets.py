"""HoVer-Net training targets and loss for the ``nuclei`` task (the CycleGAN + HoVer-Net recipe,
docs/training-recipes.md).

Targets (Graham et al., 2019, and their reference code): from an instance label image, the
nuclear-pixel map NP (1 inside any nucleus) and the horizontal / vertical maps HV (per nucleus,
the column / row offset of each pixel from the nucleus' centre of mass, divided by the largest
offset on that side, so each nucleus spans ``[-1, 1]``; 0 on the background). HV is
:func:`napari_neuroseg.models.hovernet.hv_targets`: one vectorised pass per instance over its
bounding box, never a Python loop over pixels.

Loss: ``w_ce * CE(np) + w_dice * Dice(np) + w_mse * MSE(hv) + w_msge * MSGE(hv)``, the paper's
weights 1, 1, 1, 2 by default. MSGE is the mean squared error between the gradients of the
predicted and true maps (``d h / d x`` of the horizontal map, ``d v / d y`` of the vertical
one, the reference code's 5 x 5 Sobel-like kernel ``k_x = x / (x^2 + y^2)``), averaged over
the nuclear pixels only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_neuroseg.models.hovernet import hv_targets
from training.losses import DiceLoss

__all__ = ["IGNORE_TYPE", "LOSS_TERMS", "TYPE_TERM", "HoVerNetLoss", "hv_gradient_kernels",
           "msge_loss", "nuclei_targets"]

#: Names of the loss terms, in the order of :class:`HoVerNetLoss`'s weights.
LOSS_TERMS = ("np_ce", "np_dice", "hv_mse", "hv_msge")
#: The type branch's term, added when the network has a ``"tp"`` output and the targets a
#: ``"tp"`` map (pixels of samples without known types hold :data:`IGNORE_TYPE`).
TYPE_TERM = "tp_ce"
#: Type target of pixels whose type is unknown (ignored by the loss).
IGNORE_TYPE = -100


def nuclei_targets(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NP and HV targets of an instance label image.

    Parameters
    ----------
    instances : numpy.ndarray of int, shape (H, W)
        0 background, any other value one nucleus (ids need not be consecutive). Not
        modified.

    Returns
    -------
    np_target : numpy.ndarray of int64, shape (H, W)
        1 on nuclear pixels, 0 elsewhere.
    hv : numpy.ndarray of float32, shape (2, H, W)
        Horizontal (channel 0) and vertical (channel 1) maps in ``[-1, 1]``, 0 at each
        nucleus' rounded centre of mass and on the background.
    """
    labels = np.asarray(instances)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"nuclei_targets needs a 2-D integer instance image, got "
                         f"{labels.dtype} {labels.shape}")
    return (labels > 0).astype(np.int64), hv_targets(labels)


def hv_gradient_kernels(size: int = 5, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference code's ``size x size`` derivative kernels along x and along y.

    ``k_x[y, x] = x / (x^2 + y^2)`` and ``k_y[y, x] = y / (x^2 + y^2)`` (0 at the centre), for
    offsets ``-size // 2 .. size // 2``; cross-correlating a map that increases with x (y)
    with ``k_x`` (``k_y``) gives a positive value.

    Returns
    -------
    kx, ky : torch.Tensor, shape (1, 1, size, size), float32
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"the gradient kernel size must be odd and >= 3, got {size}")
    offsets = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    norm = x * x + y * y + 1e-15
    return (x / norm)[None, None], (y / norm)[None, None]


def msge_loss(pred: torch.Tensor, true: torch.Tensor, focus: torch.Tensor,
              kernel_size: int = 5) -> torch.Tensor:
    """Mean squared gradient error of HV maps over the nuclear pixels.

    Parameters
    ----------
    pred, true : torch.Tensor, shape (N, 2, H, W)
        Predicted and target maps (channel 0 horizontal, 1 vertical).
    focus : torch.Tensor, shape (N, H, W)
        Nonzero on the pixels that count (the true nuclear pixels).
    kernel_size : int
        Size of the derivative kernels (5 in the reference code).

    Returns
    -------
    torch.Tensor
        Scalar: ``sum(focus * ((grad pred - grad true) ** 2)) / (2 * sum(focus))`` over both
        channels (0 when ``focus`` is empty).
    """
    if pred.shape != true.shape or pred.ndim != 4 or pred.shape[1] != 2:
        raise ValueError(f"msge_loss needs two (N, 2, H, W) maps, got {tuple(pred.shape)} and "
                         f"{tuple(true.shape)}")
    kx, ky = hv_gradient_kernels(kernel_size, pred.device)
    pad = kernel_size // 2

    def gradients(maps: torch.Tensor) -> torch.Tensor:
        maps = maps.float()
        return torch.cat([F.conv2d(maps[:, :1], kx, padding=pad),
                          F.conv2d(maps[:, 1:], ky, padding=pad)], dim=1)

    weight = (focus != 0).to(torch.float32)[:, None].expand(-1, 2, -1, -1)
    error = (gradients(pred) - gradients(true)) ** 2
    return (error * weight).sum() / (weight.sum() + 1e-8)


class HoVerNetLoss(nn.Module):
    """HoVer-Net's loss on the ``np`` and ``hv`` branches, remembering its terms.

    Parameters
    ----------
    np_ce, np_dice, hv_mse, hv_msge : float
        Weights of the terms (the paper's 1, 1, 1, 2).

    Notes
    -----
    ``loss(outputs, targets)``: ``outputs`` is the network's dict (``"np"`` ``(N, 2, H, W)``
    logits, ``"hv"`` ``(N, 2, H, W)``), ``targets`` a dict with ``"np"`` ``(N, H, W)`` int64
    and ``"hv"`` ``(N, 2, H, W)``. Each call adds its unweighted terms to a running sum,
    under ``"train"`` when gradients are enabled and ``"val"`` otherwise;
    :meth:`pop_terms` returns the means and starts again (for the epoch's history row).
    """

    def __init__(self, np_ce: float = 1.0, np_dice: float = 1.0, hv_mse: float = 1.0,
                 hv_msge: float = 2.0, tp_ce: float = 1.0) -> None:
        super().__init__()
        self.weights = dict(zip((*LOSS_TERMS, TYPE_TERM), (np_ce, np_dice, hv_mse, hv_msge,
                                                            tp_ce), strict=True))
        self.dice = DiceLoss()
        self._sums: dict[str, dict[str, float]] = {}
        self._counts: dict[str, int] = {}

    def terms(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
              ) -> dict[str, torch.Tensor]:
        """The four unweighted terms (scalar tensors), plus ``tp_ce`` with a type branch.

        ``tp_ce`` is the cross-entropy of the type logits over the pixels with a known type
        (0 when no pixel of the batch has one).
        """
        np_logits, np_true = outputs["np"].float(), targets["np"].long()
        hv_pred, hv_true = outputs["hv"].float(), targets["hv"].float()
        terms = {
            "np_ce": F.cross_entropy(np_logits, np_true),
            "np_dice": self.dice(np_logits, np_true),
            "hv_mse": F.mse_loss(hv_pred, hv_true),
            "hv_msge": msge_loss(hv_pred, hv_true, np_true),
        }
        if outputs.get("tp") is not None and targets.get("tp") is not None:
            tp_logits, tp_true = outputs["tp"].float(), targets["tp"].long()
            known = tp_true != IGNORE_TYPE
            terms[TYPE_TERM] = (F.cross_entropy(tp_logits, tp_true, ignore_index=IGNORE_TYPE)
                                if bool(known.any()) else tp_logits.sum() * 0.0)
        return terms

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
                ) -> torch.Tensor:
        """Weighted sum of the terms."""
        terms = self.terms(outputs, targets)
        phase = "train" if torch.is_grad_enabled() else "val"
        sums = self._sums.setdefault(phase, {})
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        self._counts[phase] = self._counts.get(phase, 0) + 1
        return sum(self.weights[k] * v for k, v in terms.items())

    def pop_terms(self) -> dict[str, float]:
        """Mean of each term per phase since the last call (``train_np_ce``, ``val_hv_msge``...)."""
        out = {f"{phase}_{name}": float(value / self._counts[phase])
               for phase, sums in self._sums.items() for name, value in sums.items()}
        self._sums, self._counts = {}, {}
        return out
