"""Patient-level data handling (the CT metastasis recipe, docs/training-recipes.md): split, patient
batches, threshold search.

- :func:`patient_split`: train / validation split by patient (no patient in both), stratified
  by patient label when labels are given (the CT metastasis recipe: 80/20).
- :class:`PatientBatchSampler`: batches made of whole patients, so that slice logits can be
  max-pooled per patient
  (:func:`napari_neuroseg.models.patient_pool.patient_max_pool_tensor`) and the loss counted
  once per patient (:func:`training.losses.patient_bce_loss`);
  :func:`batch_patient_index` numbers the patients of a batch for that.
- the probability threshold maximising patient-level F1 is
  :func:`training.metrics.threshold_search`, with its
  sensitivity and specificity (the CT metastasis recipe reports an optimal threshold of 0.10).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from training.samplers import resolve_replicas


@dataclass(frozen=True)
class PatientSplit:
    """Sample indices and patients of each side of a split."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    train_patients: tuple[Hashable, ...]
    val_patients: tuple[Hashable, ...]


def _patients_in_order(patient_ids: Sequence[Hashable]) -> list[Hashable]:
    return list(dict.fromkeys(patient_ids))


def patient_labels(
    patient_ids: Sequence[Hashable], labels: Sequence[int] | np.ndarray
) -> dict[Hashable, int]:
    """One label per patient: the maximum of its samples' labels (positive if any slice is)."""
    if len(labels) != len(patient_ids):
        raise ValueError(f"{len(labels)} labels for {len(patient_ids)} samples")
    out: dict[Hashable, int] = {}
    for pid, label in zip(patient_ids, labels, strict=True):
        out[pid] = max(out.get(pid, int(label)), int(label))
    return out


def patient_split(
    patient_ids: Sequence[Hashable],
    val_fraction: float = 0.2,
    seed: int = 0,
    stratify: Sequence[int] | np.ndarray | None = None,
) -> PatientSplit:
    """Split samples into train and validation so that no patient is in both.

    Parameters
    ----------
    patient_ids : sequence of hashable
        The patient of each sample (slice, tile...).
    val_fraction : float
        Share of patients in validation (per stratum when stratified), rounded, at least one
        patient per stratum of two or more.
    seed : int
    stratify : sequence of int, optional
        Per-sample labels; each patient's label is the maximum over its samples
        (:func:`patient_labels`) and the split keeps the label proportions.

    Returns
    -------
    PatientSplit
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    patients = _patients_in_order(patient_ids)
    if len(patients) < 2:
        raise ValueError(f"a patient split needs at least 2 patients, got {len(patients)}")
    if stratify is None:
        strata: dict[int, list[Hashable]] = {0: patients}
    else:
        by_patient = patient_labels(patient_ids, stratify)
        strata = {}
        for pid in patients:
            strata.setdefault(by_patient[pid], []).append(pid)
    rng = np.random.default_rng(seed)
    val: set[Hashable] = set()
    for label in sorted(strata):
        members = strata[label]
        n_val = round(len(members) * val_fraction)
        n_val = min(max(n_val, 1 if len(members) >= 2 else 0), len(members) - 1)
        order = rng.permutation(len(members))
        val.update(members[i] for i in order[:n_val])
    if not val:
        raise ValueError("no patient could go to validation: every stratum has one patient")
    in_val = np.array([pid in val for pid in patient_ids], dtype=bool)
    return PatientSplit(
        train_indices=np.flatnonzero(~in_val),
        val_indices=np.flatnonzero(in_val),
        train_patients=tuple(p for p in patients if p not in val),
        val_patients=tuple(p for p in patients if p in val),
    )


class PatientBatchSampler(Sampler[list[int]]):
    """Batches of whole patients: every slice of a patient lands in the same batch.

    Parameters
    ----------
    patient_ids : sequence of hashable
        The patient of each sample.
    patients_per_batch : int
    max_slices_per_patient : int, optional
        Keep a random subset of at most this many slices of each patient per epoch (memory).
    shuffle : bool
        Shuffle patients (and the subset) every epoch, seeded by ``(seed, epoch)``.
    seed : int
    num_replicas, rank : int, optional
        DDP: patients are split across ranks (padded so every rank gets as many batches).
    """

    def __init__(
        self,
        patient_ids: Sequence[Hashable],
        patients_per_batch: int = 1,
        max_slices_per_patient: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if patients_per_batch < 1:
            raise ValueError(f"patients_per_batch must be >= 1, got {patients_per_batch}")
        if max_slices_per_patient is not None and max_slices_per_patient < 1:
            raise ValueError(f"max_slices_per_patient must be >= 1, got {max_slices_per_patient}")
        groups: dict[Hashable, list[int]] = {}
        for index, pid in enumerate(patient_ids):
            groups.setdefault(pid, []).append(index)
        if not groups:
            raise ValueError("PatientBatchSampler needs at least one sample")
        self.groups = [np.asarray(g) for g in groups.values()]
        self.patients = tuple(groups)
        self.patients_per_batch = patients_per_batch
        self.max_slices = max_slices_per_patient
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce."""
        self.epoch = int(epoch)

    def _rank_patients(self, rng: np.random.Generator) -> np.ndarray:
        order = np.arange(len(self.groups))
        if self.shuffle:
            order = rng.permutation(order)
        pad = (-order.size) % self.num_replicas
        order = np.concatenate([order, np.resize(order, pad)])
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        mine = self._rank_patients(rng)
        for start in range(0, mine.size, self.patients_per_batch):
            batch: list[int] = []
            for patient in mine[start : start + self.patients_per_batch]:
                slices = self.groups[patient]
                if self.max_slices is not None and slices.size > self.max_slices:
                    pick = rng.choice(slices.size, self.max_slices, replace=False)
                    slices = slices[np.sort(pick)]
                batch.extend(slices.tolist())
            yield batch

    def __len__(self) -> int:
        per_rank = -(-len(self.groups) // self.num_replicas)
        return -(-per_rank // self.patients_per_batch)


def batch_patient_index(
    patient_ids: Sequence[Hashable], device: torch.device | str | None = None
) -> tuple[torch.Tensor, list[Hashable]]:
    """Number the patients of a batch ``0 .. n - 1`` in order of first appearance.

    Returns
    -------
    (Tensor of int64 (n_slices,), list)
        The patient index of each slice (for ``patient_max_pool_tensor``) and the patients.
    """
    patients = _patients_in_order(patient_ids)
    number = {pid: i for i, pid in enumerate(patients)}
    index = torch.tensor([number[p] for p in patient_ids], dtype=torch.long, device=device)
    return index, patients

