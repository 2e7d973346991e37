"""Losses for the training recipes: class-weighted cross-entropy, focal, soft Dice, patient BCE.

Every loss takes raw logits. Multi-class inputs are ``(N, C, ...)`` logits with ``(N, ...)``
integer targets; binary inputs are ``(N, 1, ...)`` or ``(N, ...)`` logits with targets of the
same number of elements (0/1, or soft). Label smoothing ``s`` replaces a one-hot target ``y``
by ``(1 - s) * y + s / C`` (``C = 2`` for binary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_neuroseg.models.patient_pool import patient_max_pool_tensor


def class_weights_from_frequencies(
    frequencies: Sequence[float] | np.ndarray, mode: str = "inverse", eps: float = 1e-6
) -> torch.Tensor:
    """Class weights for a weighted loss from class frequencies (pixel shares or counts).

    Parameters
    ----------
    frequencies : array-like (n_classes,)
    mode : {"inverse", "inverse_sqrt", "median"}
        ``1/f``, ``1/sqrt(f)``, or median-frequency balancing ``median(f)/f``.
    eps : float
        Floor on frequencies (an absent class gets a large, finite weight).

    Returns
    -------
    torch.Tensor (n_classes,) float32
        ``inverse`` and ``inverse_sqrt`` are scaled to mean 1.
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    freq = np.maximum(freq / max(freq.sum(), eps), eps)
    if mode == "inverse":
        weights = 1.0 / freq
    elif mode == "inverse_sqrt":
        weights = 1.0 / np.sqrt(freq)
    elif mode == "median":
        return torch.as_tensor(np.median(freq) / freq, dtype=torch.float32)
    else:
        raise ValueError(f"mode must be 'inverse', 'inverse_sqrt' or 'median', got {mode!r}")
    return torch.as_tensor(weights / weights.mean(), dtype=torch.float32)


def _binary_view(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat_logits = logits.reshape(-1)
    flat_target = target.reshape(-1).to(flat_logits.dtype)
    if flat_logits.numel() != flat_target.numel():
        raise ValueError(f"binary logits {tuple(logits.shape)} vs target {tuple(target.shape)}")
    return flat_logits, flat_target


def _is_binary(logits: torch.Tensor, target: torch.Tensor) -> bool:
    return logits.ndim == target.ndim or (logits.ndim >= 2 and logits.shape[1] == 1)


def _soft_targets(
    target: torch.Tensor, n_classes: int, smoothing: float, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, ...) smoothed one-hot targets and the (N, ...) boolean mask of kept pixels."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    if safe.numel() and (int(safe.min()) < 0 or int(safe.max()) >= n_classes):
        raise ValueError(f"target labels outside 0..{n_classes - 1} (and not ignore_index)")
    one_hot = F.one_hot(safe, n_classes).movedim(-1, 1).float()
    return one_hot * (1.0 - smoothing) + smoothing / n_classes, valid


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with optional class weights and label smoothing (binary: BCE).

    Parameters
    ----------
    class_weights : sequence of float or Tensor, optional
        Multi-class: one weight per class (mean is weighted as in ``F.cross_entropy``).
        Binary: ``[w_negative, w_positive]``, used as ``pos_weight = w1 / w0``.
    label_smoothing : float
    ignore_index : int
        Multi-class target value to skip.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        weights = None if class_weights is None else torch.as_tensor(class_weights).float()
        self.register_buffer("class_weights", weights)
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss (a scalar)."""
        if _is_binary(logits, target):
            flat_logits, flat_target = _binary_view(logits, target)
            flat_target = flat_target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            pos_weight = None
            if self.class_weights is not None:
                pos_weight = self.class_weights[1] / self.class_weights[0]
            return F.binary_cross_entropy_with_logits(
                flat_logits, flat_target, pos_weight=pos_weight
            )
        return F.cross_entropy(
            logits,
            target.long(),
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class FocalLoss(nn.Module):
    """Focal loss ``-sum_c alpha_c q_c (1 - p_c)^gamma log p_c`` averaged over pixels.

    With one-hot ``q`` this is Lin et al.'s ``-alpha_t (1 - p_t)^gamma log p_t``; ``gamma = 0``
    and no ``alpha`` give plain cross-entropy.

    Parameters
    ----------
    gamma : float
        Focusing parameter (2 in Lin et al.).
    alpha : sequence of float or Tensor, optional
        Per-class weights (binary: ``[alpha_negative, alpha_positive]``).
    label_smoothing : float
    ignore_index : int
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha).float())
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the (non-ignored) pixels."""
        if _is_binary(logits, target):
            flat_logits, flat_target = _binary_view(logits, target)
            log_p = torch.stack([F.logsigmoid(-flat_logits), F.logsigmoid(flat_logits)], 1)
            soft = torch.stack([1 - flat_target, flat_target], 1)
            soft = soft * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            valid = torch.ones_like(flat_target, dtype=torch.bool)
        else:
            log_p = F.log_softmax(logits.float(), dim=1)
            soft, valid = _soft_targets(
                target, logits.shape[1], self.label_smoothing, self.ignore_index
            )
        weight = (1 - log_p.exp()).clamp_min(0) ** self.gamma
        if self.alpha is not None:
            shape = [1, -1] + [1] * (log_p.ndim - 2)
            weight = weight * self.alpha.to(log_p).reshape(shape)
        per_pixel = -(weight * soft * log_p).sum(dim=1)
        kept = per_pixel[valid]
        return kept.mean() if kept.numel() else per_pixel.sum() * 0.0


class DiceLoss(nn.Module):
    """Soft Dice loss ``1 - (2 sum(p g) + s) / (sum p + sum g + s)``, averaged over classes.

    Sums run over the whole batch and all pixels ("batch Dice"), per class.

    Parameters
    ----------
    smooth : float
        ``s``: keeps the loss defined (and 0) for a class absent from both prediction and
        target.
    include_background : bool
        Multi-class: include class 0 in the average.
    ignore_index : int
        Multi-class target value whose pixels are left out.
    """

    def __init__(
        self, smooth: float = 1.0, include_background: bool = True, ignore_index: int = -100
    ) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.include_background = include_background
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean Dice loss over classes (binary: the foreground class)."""
        if _is_binary(logits, target):
            flat_logits, flat_target = _binary_view(logits, target)
            probs, truth = torch.sigmoid(flat_logits)[None], flat_target[None]
        else:
            n_classes = logits.shape[1]
            truth, valid = _soft_targets(target, n_classes, 0.0, self.ignore_index)
            probs = torch.softmax(logits.float(), dim=1)
            keep = valid.unsqueeze(1).to(probs.dtype)
            probs = (probs * keep).movedim(1, 0).reshape(n_classes, -1)
            truth = (truth * keep).movedim(1, 0).reshape(n_classes, -1)
            if not self.include_background:
                probs, truth = probs[1:], truth[1:]
        overlap = (probs * truth).sum(dim=1)
        dice = (2 * overlap + self.smooth) / (probs.sum(dim=1) + truth.sum(dim=1) + self.smooth)
        return 1 - dice.mean()


class CombinedLoss(nn.Module):
    """Weighted sum of losses.

    E.g. ``CombinedLoss([(WeightedCrossEntropy(), 1.0), (DiceLoss(), 1.0)])``.

    Parameters
    ----------
    terms : sequence of (torch.nn.Module, float)
    """

    def __init__(self, terms: Sequence[tuple[nn.Module, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        self.losses = nn.ModuleList([loss for loss, _ in terms])
        self.weights = [float(w) for _, w in terms]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k * loss_k(logits, target)``."""
        total = logits.new_zeros(())
        for loss, weight in zip(self.losses, self.weights, strict=True):
            total = total + weight * loss(logits, target)
        return total


def make_loss(
    name: str,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    dice_weight: float = 1.0,
    ignore_index: int = -100,
) -> nn.Module:
    """Build a loss by name (for configuration files).

    Parameters
    ----------
    name : {"ce", "focal", "dice", "ce+dice", "focal+dice"}
    class_weights : sequence of float, optional
        Class weights of ``ce`` or ``alpha`` of ``focal``.
    label_smoothing : float
    focal_gamma : float
    dice_weight : float
        Weight of the Dice term in the combinations (the other term has weight 1).
    ignore_index : int
    """
    parts = name.lower().split("+")
    known = {"ce", "focal", "dice"}
    if not parts or set(parts) - known or len(set(parts)) != len(parts):
        raise ValueError(f"unknown loss {name!r}: use ce, focal, dice, ce+dice or focal+dice")
    terms: list[tuple[nn.Module, float]] = []
    for part in parts:
        if part == "ce":
            terms.append((WeightedCrossEntropy(class_weights, label_smoothing, ignore_index), 1))
        elif part == "focal":
            loss = FocalLoss(focal_gamma, class_weights, label_smoothing, ignore_index)
            terms.append((loss, 1.0))
        else:
            terms.append((DiceLoss(ignore_index=ignore_index), dice_weight))
    return terms[0][0] if len(terms) == 1 else CombinedLoss(terms)


def patient_bce_loss(
    slice_logits: torch.Tensor,
    patient_index: torch.Tensor,
    patient_labels: torch.Tensor,
    pos_weight: float | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The CT metastasis recipe's patient-level loss: max-pool slice logits per patient, BCE once
    per patient.

    Parameters
    ----------
    slice_logits : Tensor (n_slices,) or (n_slices, 1)
    patient_index : Tensor of int (n_slices,)
        ``0 .. n_patients - 1``: the patient of each slice.
    patient_labels : Tensor (n_patients,)
        0/1 label of each patient.
    pos_weight : float, optional
        Weight of the positive term.
    label_smoothing : float

    Returns
    -------
    Tensor
        Mean over patients: each patient counts once whatever its number of slices.
    """
    labels = patient_labels.reshape(-1).to(slice_logits.dtype)
    pooled = patient_max_pool_tensor(slice_logits, patient_index, labels.numel())
    if torch.isinf(pooled).any():
        raise ValueError("a patient in patient_labels has no slice in this batch")
    labels = labels * (1 - label_smoothing) + 0.5 * label_smoothing
    weight = None if pos_weight is None else pooled.new_tensor(float(pos_weight))
    return F.binary_cross_entropy_with_logits(pooled, labels, pos_weight=weight)
