"""Losses: values on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    CombinedLoss,
    DiceLoss,
    FocalLoss,
    WeightedCrossEntropy,
    class_weights_from_frequencies,
    make_loss,
    patient_bce_loss,
)


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0, 1])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = math.log(2)
    assert float(WeightedCrossEntropy()(logits, target)) == pytest.approx((l0 + l1) / 2)
    weighted = WeightedCrossEntropy([1.0, 3.0])(logits, target)
    assert float(weighted) == pytest.approx((l0 + 3 * l1) / 4)


def test_label_smoothing_multiclass_and_binary():
    logits = torch.tensor([[3.0, 0.0, 0.0]])
    log_p = F.log_softmax(logits, 1)[0]
    q = torch.tensor([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    loss = WeightedCrossEntropy(label_smoothing=0.1)(logits, torch.tensor([0]))
    assert float(loss) == pytest.approx(float(-(q * log_p).sum()), rel=1e-6)
    # Binary: target 1 becomes 0.95.
    x = torch.tensor([1.0])
    expected = -(0.95 * math.log(torch.sigmoid(x).item()) + 0.05 * math.log(1 - 0.7310586))
    assert float(WeightedCrossEntropy(label_smoothing=0.1)(x, torch.tensor([1.0]))) == (
        pytest.approx(expected, rel=1e-5)
    )


def test_binary_class_weights_are_a_pos_weight():
    x, y = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    loss = WeightedCrossEntropy([1.0, 4.0])(x, y)
    assert float(loss) == pytest.approx((4 * math.log(2) + math.log(2)) / 2)


def test_focal_loss_values():
    # Binary p_t = 0.8 (logit log 4), gamma 2: -(0.2**2) log 0.8.
    x = torch.tensor([math.log(4.0)])
    assert float(FocalLoss(gamma=2)(x, torch.tensor([1.0]))) == pytest.approx(
        -(0.2**2) * math.log(0.8), rel=1e-5
    )
    # gamma 0 is cross-entropy; alpha weights the true class.
    logits = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (4, 5, 5), generator=torch.Generator().manual_seed(1))
    ce = F.cross_entropy(logits, target)
    assert float(FocalLoss(gamma=0)(logits, target)) == pytest.approx(float(ce), rel=1e-5)
    assert float(FocalLoss(gamma=2)(logits, target)) < float(ce)
    alpha = torch.tensor([1.0, 2.0, 0.5])
    by_hand = (alpha[target] * F.cross_entropy(logits, target, reduction="none")).mean()
    assert float(FocalLoss(0, alpha=alpha)(logits, target)) == pytest.approx(float(by_hand), 1e-5)


def test_focal_ignores_ignore_index():
    logits = torch.tensor([[[5.0, -5.0]], [[-5.0, 5.0]]]).permute(1, 0, 2)  # (1, 2, 2)
    target = torch.tensor([[0, -100]])
    loss = FocalLoss(gamma=0)(logits, target)
    assert float(loss) == pytest.approx(-math.log(torch.sigmoid(torch.tensor(10.0)).item()), 1e-4)


def test_dice_by_hand():
    # Binary, smooth 0: probs 0.5 everywhere on 4 pixels, 2 foreground -> 1 - 2*1/(2+2) = 0.5.
    loss = DiceLoss(smooth=0)(torch.zeros(1, 1, 2, 2), torch.tensor([[[1, 1], [0, 0]]]))
    assert float(loss) == pytest.approx(0.5)
    target = torch.tensor([[[0, 1], [2, 2]]])
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40
    assert float(DiceLoss()(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 40
    assert float(DiceLoss(smooth=0)(wrong, target)) == pytest.approx(1.0, abs=1e-6)
    # Without background only classes 1 and 2 count: class 0 wrong, others right.
    half = perfect.clone()
    half[0, :, 0, 0] = torch.tensor([0.0, 40.0, 0.0])
    target_bg = torch.tensor([[[0, 1], [2, 2]]])
    with_bg = float(DiceLoss(smooth=0)(half, target_bg))
    without_bg = float(DiceLoss(smooth=0, include_background=False)(half, target_bg))
    assert with_bg == pytest.approx(1 - (0 + 2 / 3 + 1) / 3, abs=1e-5)
    assert without_bg == pytest.approx(1 - (2 / 3 + 1) / 2, abs=1e-5)


def test_combined_and_factory():
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    combo = make_loss("ce+dice", class_weights=[1, 1, 2, 4], dice_weight=0.5)
    assert isinstance(combo, CombinedLoss)
    ce = WeightedCrossEntropy([1, 1, 2, 4])(logits, target)
    expected = ce + 0.5 * DiceLoss()(logits, target)
    value = combo(logits, target)
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert isinstance(make_loss("focal"), FocalLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("ce+hinge")


def test_class_weights_from_frequencies():
    w = class_weights_from_frequencies([0.456, 0.371, 0.116, 0.057])
    assert float(w.mean()) == pytest.approx(1.0)
    assert float(w[3] / w[0]) == pytest.approx(0.456 / 0.057, rel=1e-5)
    med = class_weights_from_frequencies([1, 2, 3], mode="median")
    np.testing.assert_allclose(med.numpy(), [2, 1, 2 / 3], rtol=1e-6)
    with pytest.raises(ValueError):
        class_weights_from_frequencies([1, 1], mode="nope")


def test_patient_loss_counts_each_patient_once():
    # Patient 0: ten slices, max logit 2; patient 1: one slice, logit -1.
    logits = torch.tensor([0.0] * 9 + [2.0] + [-1.0], requires_grad=True)
    index = torch.tensor([0] * 10 + [1])
    labels = torch.tensor([1.0, 0.0])
    loss = patient_bce_loss(logits, index, labels)
    expected = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(-1.0))) / 2
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 2  # only the max slice of each patient
    with pytest.raises(ValueError, match="no slice"):
        patient_bce_loss(logits, index, torch.tensor([1.0, 0.0, 1.0]))
