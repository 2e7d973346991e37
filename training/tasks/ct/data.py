"""Data side of the ``ct`` task: slice preprocessing, the quality filter, patient-batch loaders.

Every slice is prepared once, before training, by the function the plugin uses at inference,
:func:`napari_neuroseg.preprocess.ct_input.ct_model_input` (which
:func:`napari_neuroseg.analysis.volume.prepare_ct_slice` calls), for the steps the spec
records: the CT metastasis recipe's brain extraction, window, z-score, square padding and
resize (docs/training-recipes.md), or the earlier brain-extracted HU that the spec's
``ct_window`` normalisation windows. Slices are kept in memory as float16 (128 KiB per
256 x 256 slice); the class-conditional augmentation is applied when a slice is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.ct import brain_mask, slice_quality
from napari_neuroseg.preprocess.ct_input import ct_model_input, is_recipe_input
from training.augment import ClassConditionalAugment
from training.seeding import seed_worker
from training.split import PatientBatchSampler
from training.tasks._common import DataError

__all__ = [
    "CTSlices",
    "PreparedSlices",
    "patient_label_of_items",
    "patient_loader",
    "prepare_slices",
]


@dataclass(frozen=True)
class PreparedSlices:
    """Model inputs of some items of a ``ct`` dataset (before the runner's normalisation).

    Attributes
    ----------
    items : numpy.ndarray of int
        Index in ``data.items`` of each slice.
    images : numpy.ndarray of float16, shape (n, size, size)
        The plugin's prepared slice: the recipe's z-scored input, or brain-only HU.
    brain_fraction : numpy.ndarray of float
        Share of the original slice covered by brain.
    usable : numpy.ndarray of bool
        Passes the quality filter (or belongs to a patient none of whose slices passes it).
    """

    items: np.ndarray
    images: np.ndarray
    brain_fraction: np.ndarray
    usable: np.ndarray

    def __len__(self) -> int:
        return int(self.items.size)


def patient_label_of_items(data: Dataset) -> list[int]:
    """Each item's patient label: the maximum label over the patient's slices.

    The converters put the patient's label on every slice; a dataset exported with slice
    labels gets a positive patient when any slice is positive (the recipe's clinical rule).
    """
    by_patient: dict[Hashable, int] = {}
    for item in data.items:
        key = item.patient_id or item.id
        by_patient[key] = max(by_patient.get(key, 0), int(item.label or 0))
    return [by_patient[item.patient_id or item.id] for item in data.items]


def _pixel_spacing(data: Dataset, index: int) -> float | tuple[float, float]:
    spacing = data.items[index].region.get("spacing_mm")
    if not spacing:  # unknown: the brain mask's mm thresholds then assume 1 mm pixels
        return 1.0
    return float(spacing[-2]), float(spacing[-1])


def model_input(hu: np.ndarray, spec: ModelSpec, spacing: float | tuple[float, float],
                mask: np.ndarray) -> np.ndarray:
    """:func:`~napari_neuroseg.preprocess.ct_input.ct_model_input` (the plugin's function)
    reusing a brain mask computed already."""
    pixel = (spacing, spacing) if np.isscalar(spacing) else tuple(spacing)
    return ct_model_input(hu, spec, pixel, mask=mask)


def prepare_slices(data: Dataset, indices: Sequence[int] | np.ndarray, spec: ModelSpec,
                   min_brain_fraction: float,
                   on_progress: Callable[[int, int], None] | None = None) -> PreparedSlices:
    """Prepare items ``indices`` of ``data`` for ``spec`` and apply the recipe's quality filter.

    A slice is usable when brain covers at least ``min_brain_fraction`` of it
    (:func:`napari_neuroseg.preprocess.ct.slice_quality`). A patient none of whose slices
    passes keeps all of them, so that every patient still gets a decision.

    Raises
    ------
    DataError
        An item's image is not a 2-D slice.
    """
    indices = np.asarray(indices, dtype=np.int64)
    edge = spec.input.patch_size
    images = np.zeros((indices.size, *edge), dtype=np.float16)
    fraction = np.zeros(indices.size)
    usable = np.zeros(indices.size, dtype=bool)
    for n, index in enumerate(indices):
        item = data.items[int(index)]
        hu = np.asarray(data.read_image(item), dtype=np.float32)
        if hu.ndim != 2:
            raise DataError(f"{data.path}: item {item.id} is not a 2-D CT slice "
                            f"(shape {hu.shape})")
        spacing = _pixel_spacing(data, int(index))
        mask = brain_mask(hu, spacing=spacing)
        quality = slice_quality(hu, spacing=spacing, min_brain_fraction=min_brain_fraction,
                                mask=mask)
        images[n] = model_input(hu, spec, spacing, mask)
        fraction[n], usable[n] = quality.brain_fraction, quality.usable
        if on_progress is not None:
            on_progress(n + 1, indices.size)
    patients = np.array([data.items[int(i)].patient_id or data.items[int(i)].id
                         for i in indices], dtype=object)
    for patient in set(patients):
        own = patients == patient
        if not usable[own].any():
            usable[own] = True
    return PreparedSlices(indices, images, fraction, usable)


class CTSlices(TorchDataset):
    """Usable prepared slices as ``(1, H, W)`` network inputs, augmented by patient label.

    Items are ``(x, label, item_index)``: ``x`` float32 as the runner would feed it (the
    spec's normalisation applied: z-scores for the recipe's input, [0, 1] for the earlier
    window), the patient's label as float, the index in ``data.items`` (to find the patient).
    The augmentations (gamma, CLAHE, sharpening) work on [0, 1]: a z-scored slice is mapped
    to [0, 1] by its own minimum and maximum for them and back afterwards.
    """

    def __init__(self, prepared: PreparedSlices, patient_labels: Sequence[int], spec: ModelSpec,
                 augment: ClassConditionalAugment | None = None) -> None:
        self.prepared, self.spec, self.augment = prepared, spec, augment
        self.rows = np.flatnonzero(prepared.usable)
        self.labels = [int(patient_labels[int(prepared.items[r])]) for r in self.rows]

    def __len__(self) -> int:
        return int(self.rows.size)

    def item_indices(self) -> list[int]:
        """Index in ``data.items`` of each sample, in order."""
        return [int(self.prepared.items[r]) for r in self.rows]

    def __getitem__(self, i: int):
        hu = torch.from_numpy(self.prepared.images[self.rows[i]].astype(np.float32))
        x = normalize(hu[None, None], self.spec.input.normalization)[0]
        if self.augment is not None:  # seeded from torch, which the trainer seeds per epoch
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
            image = x[0].numpy()
            low, span = (float(image.min()), float(np.ptp(image)) or 1.0) \
                if is_recipe_input(self.spec) else (0.0, 1.0)
            image, _ = self.augment((image - low) / span, None, rng, label=self.labels[i])
            image = np.asarray(image, dtype=np.float32) * span + low
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        return x, float(self.labels[i]), int(self.prepared.items[self.rows[i]])


def patient_loader(slices: CTSlices, patient_ids: Sequence[Hashable], *,
                   patients_per_batch: int, max_slices: int | None, shuffle: bool, seed: int,
                   num_workers: int, num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """A loader whose batches hold whole patients (:class:`PatientBatchSampler`).

    ``patient_ids`` gives the patient of each item of ``data.items``; under DDP the patients
    are shared out across ranks by the sampler itself.
    """
    own = [patient_ids[i] for i in slices.item_indices()]
    sampler = PatientBatchSampler(own, patients_per_batch, max_slices, shuffle=shuffle,
                                  seed=seed, num_replicas=num_replicas, rank=rank)
    return DataLoader(slices, batch_sampler=sampler, num_workers=num_workers,
                      worker_init_fn=seed_worker)
