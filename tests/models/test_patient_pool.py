"""Tests for napari_neuroseg.models.patient_pool (slice logits max-pooled per patient)."""

from __future__ import annotations

import pytest
import torch

from napari_neuroseg.models.patient_pool import patient_max_pool, patient_max_pool_tensor


def test_patient_max_pool():
    logits = [0.1, -2.0, 3.5, -1.0, 0.7]
    pooled = patient_max_pool(torch.tensor(logits).reshape(-1, 1), ["a", "b", "a", "b", "c"])
    assert pooled == pytest.approx({"a": 3.5, "b": -1.0, "c": 0.7})
    assert list(pooled) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="patient ids"):
        patient_max_pool(logits, ["a"])


def test_patient_max_pool_tensor_gradient_goes_to_max_slice():
    logits = torch.tensor([[0.1], [-2.0], [3.5], [-1.0], [0.7]], requires_grad=True)
    index = torch.tensor([0, 1, 0, 1, 2])
    pooled = patient_max_pool_tensor(logits, index, n_patients=4)
    assert pooled[:3].tolist() == pytest.approx([3.5, -1.0, 0.7])
    assert pooled[3] == float("-inf")  # patient without slices
    pooled[:3].sum().backward()
    assert logits.grad.reshape(-1).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
