"""Patient-wise splits of the ``mri`` task that keep tumour slices on both sides.

With a few tumour slices among many empty ones (the 24 real LGG slices: 6 tumour slices from
6 of 21 patients), an unstratified patient split often leaves validation without any tumour
slice, and its Dice then says nothing about segmentation. Here a patient is *positive* when
any of its slices has a non-empty mask, and:

- :func:`mri_split` stratifies the usual train/validation split
  (:func:`training.tasks._common.task_split`) by that label, so both sides get positive
  patients when there are two or more;
- :func:`patient_kfold` assigns whole patients to ``n_folds`` folds, positive and negative
  patients dealt round-robin separately, for a patient-wise cross-validation in which every
  slice is validated exactly once.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from napari_neuroseg.dataset import Dataset
from training.split import PatientSplit, patient_labels
from training.tasks._common import DataError, group_ids, task_split

__all__ = ["mri_split", "patient_kfold", "tumour_labels"]


def tumour_labels(data: Dataset) -> list[int]:
    """1 for each item whose mask has an abnormal (non-zero) pixel, else 0 (masks decoded)."""
    counts = data.class_pixel_counts()
    return [int(any(n > 0 for cid, n in counts[item.id].items() if cid != 0))
            for item in data.items]


def patient_kfold(patient_ids: Sequence[Hashable], n_folds: int, fold: int, seed: int = 0,
                  stratify: Sequence[int] | np.ndarray | None = None) -> PatientSplit:
    """Fold ``fold`` of a patient-wise k-fold: its patients validate, the others train.

    Parameters
    ----------
    patient_ids : sequence of hashable
        The patient of each sample.
    n_folds : int
        Number of folds, at least 2 and at most the number of patients.
    fold : int
        Which fold validates, ``0 .. n_folds - 1``.
    seed : int
        Seeds the shuffling of patients (the same seed gives the same folds for every
        ``fold``, so the folds partition the patients).
    stratify : sequence of int, optional
        Per-sample labels; a patient's label is the maximum over its samples. Patients of each
        label are shuffled and dealt to the folds in turn, the count carrying over from one
        label to the next, so fold sizes differ by at most one patient.

    Returns
    -------
    PatientSplit
    """
    patients = list(dict.fromkeys(patient_ids))
    if not 2 <= n_folds <= len(patients):
        raise ValueError(f"n_folds must be between 2 and the number of patients "
                         f"({len(patients)}), got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    labels = (dict.fromkeys(patients, 0) if stratify is None
              else patient_labels(patient_ids, stratify))
    rng = np.random.default_rng(seed)
    assigned: dict[Hashable, int] = {}
    dealt = 0
    for label in sorted(set(labels.values()), reverse=True):  # rare positives first
        members = [p for p in patients if labels[p] == label]
        for i in rng.permutation(len(members)):
            assigned[members[i]] = dealt % n_folds
            dealt += 1
    in_val = np.array([assigned[p] == fold for p in patient_ids], dtype=bool)
    return PatientSplit(
        train_indices=np.flatnonzero(~in_val),
        val_indices=np.flatnonzero(in_val),
        train_patients=tuple(p for p in patients if assigned[p] != fold),
        val_patients=tuple(p for p in patients if assigned[p] == fold),
    )


def mri_split(data: Dataset, val_fraction: float, seed: int, *, stratify_tumour: bool = True,
              folds: int = 0, fold: int = 0) -> PatientSplit:
    """The patient-wise split of an ``mri`` training run.

    Parameters
    ----------
    data : Dataset
    val_fraction : float
        Share of patients (of each label when stratified) in validation; unused with folds.
        ``0`` (without folds): every patient outside the test split trains, none validates
        (the final model, once cross-validation has measured the recipe).
    seed : int
    stratify_tumour : bool
        Stratify patients by whether any of their slices has an abnormality.
    folds, fold : int
        ``folds >= 2``: cross-validation, fold ``fold`` validates (:func:`patient_kfold`);
        items marked ``split: test`` are left out. ``folds = 0``: the usual split, which
        honours the items' fixed ``train`` / ``val`` marks.

    Raises
    ------
    DataError
        Cross-validation asked of a dataset with items fixed in ``train`` or ``val``, or an
        impossible fold.
    """
    if folds in (0, 1) and val_fraction == 0:  # the final model: every patient trains
        keep = np.array([i for i, item in enumerate(data.items) if item.split != "test"],
                        dtype=np.int64)
        groups = group_ids(data)
        return PatientSplit(train_indices=keep, val_indices=np.zeros(0, np.int64),
                            train_patients=tuple(dict.fromkeys(groups[i] for i in keep)),
                            val_patients=())
    labels = tumour_labels(data) if stratify_tumour else None
    if folds in (0, 1):
        return task_split(data, val_fraction, seed, stratify=labels)
    fixed = [item.id for item in data.items if item.split in ("train", "val")]
    if fixed:
        raise DataError(f"{data.path}: cross-validation (folds: {folds}) reassigns every item, "
                        f"but {len(fixed)} item(s) are fixed in train/val, e.g. {fixed[0]}")
    keep = np.array([i for i, item in enumerate(data.items) if item.split != "test"])
    if keep.size == 0:
        raise DataError(f"{data.path}: no items outside the test split")
    groups = group_ids(data)
    try:
        part = patient_kfold([groups[i] for i in keep], folds, fold, seed,
                             None if labels is None else [labels[i] for i in keep])
    except ValueError as error:
        raise DataError(f"{data.path}: {error}") from error
    return PatientSplit(train_indices=keep[part.train_indices],
                        val_indices=keep[part.val_indices],
                        train_patients=part.train_patients, val_patients=part.val_patients)
