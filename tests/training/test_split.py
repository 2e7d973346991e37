"""Patient-level split, patient batches and the F1 threshold search (the CT metastasis recipe)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.losses import patient_bce_loss
from training.split import (
    PatientBatchSampler,
    batch_patient_index,
    patient_labels,
    patient_split,
)


def _slices(n_patients: int = 50, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Patients with 3-12 slices; 40 % positive patients (positive on some slices only)."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for p in range(n_patients):
        n = int(rng.integers(3, 13))
        positive = p % 5 < 2
        ids += [f"P{p:03d}"] * n
        labels += [int(positive and i % 2 == 0) for i in range(n)]
    return ids, np.array(labels)


def test_split_is_disjoint_complete_and_reproducible():
    ids, _ = _slices()
    split = patient_split(ids, val_fraction=0.2, seed=4)
    train_p = {ids[i] for i in split.train_indices}
    val_p = {ids[i] for i in split.val_indices}
    assert not train_p & val_p
    assert sorted(np.concatenate([split.train_indices, split.val_indices])) == list(range(len(ids)))
    assert len(val_p) == 10 and set(split.val_patients) == val_p
    again = patient_split(ids, val_fraction=0.2, seed=4)
    np.testing.assert_array_equal(again.val_indices, split.val_indices)
    other = patient_split(ids, val_fraction=0.2, seed=5)
    assert set(other.val_patients) != val_p


def test_split_is_stratified_by_patient_label():
    ids, labels = _slices()
    by_patient = patient_labels(ids, labels)
    assert sum(by_patient.values()) == 20
    for seed in range(5):
        split = patient_split(ids, 0.2, seed=seed, stratify=labels)
        assert sum(by_patient[p] for p in split.val_patients) == 4  # 20 % of 20 positives
        assert len(split.val_patients) == 10


def test_split_edge_cases():
    with pytest.raises(ValueError, match="at least 2 patients"):
        patient_split(["a", "a"])
    with pytest.raises(ValueError, match="val_fraction"):
        patient_split(["a", "b"], val_fraction=1.0)
    tiny = patient_split(["a", "b", "c"], val_fraction=0.1)  # at least one patient
    assert len(tiny.val_patients) == 1 and len(tiny.train_patients) == 2


def test_patient_batches_hold_whole_patients():
    ids, _ = _slices(12)
    sampler = PatientBatchSampler(ids, patients_per_batch=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    assert sorted(itertools.chain(*batches)) == list(range(len(ids)))
    owner = {}
    for b, batch in enumerate(batches):
        for i in batch:
            owner.setdefault(ids[i], set()).add(b)
    assert all(len(v) == 1 for v in owner.values())
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_patient_batches_cap_and_ranks():
    ids, _ = _slices(9)
    capped = list(PatientBatchSampler(ids, max_slices_per_patient=3, seed=0))
    assert all(1 <= len(b) <= 3 for b in capped) and len(capped) == 9
    ranks = [PatientBatchSampler(ids, 2, seed=3, num_replicas=2, rank=r) for r in range(2)]
    parts = [list(r) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == len(ranks[0]) == 3
    patients = [{ids[i] for b in part for i in b} for part in parts]
    assert len(patients[0] | patients[1]) == 9
    assert len(patients[0] & patients[1]) <= 1  # 9 patients on 2 ranks: one padded repeat


def test_patient_batches_feed_the_patient_loss():
    ids, labels = _slices(6)
    data = TensorDataset(torch.arange(len(ids)))
    loader = DataLoader(data, batch_sampler=PatientBatchSampler(ids, 2, seed=0))
    by_patient = patient_labels(ids, labels)
    for (indices,) in loader:
        batch_ids = [ids[i] for i in indices.tolist()]
        index, patients = batch_patient_index(batch_ids)
        assert len(patients) == 2 and index.max() == 1
        logits = torch.zeros(len(batch_ids))
        target = torch.tensor([float(by_patient[p]) for p in patients])
        assert float(patient_bce_loss(logits, index, target)) == pytest.approx(np.log(2))
