"""Per-volume scores of an ``mri`` dataset: slices put back at their numbers, then scored.

The field reports FLAIR-abnormality segmentation of the TCGA-LGG cohort per *volume* (Buda et
al. 2019: the Dice of a patient's slices taken together, averaged over patients). A dataset
item is one slice; :func:`patient_volumes` regroups a patient's items into a ``(Z, H, W)``
volume in which slice ``n`` sits at plane ``n - first``. Slice numbers with no item (the
Kaggle set keeps only every second empty slice) become *absent* planes: they stay empty in the
prediction, so the 3-D clean-up sees true distances along z, and they are never scored.

:func:`score_volumes` gives, over the present slices of every volume:

- ``volume_dice``: mean over volumes of the Dice of the whole volume;
- ``slice_dice_tumour``: mean Dice over the slices whose reference mask is not empty;
- ``missed_tumour_slices``: tumour slices with no predicted pixel on the abnormality;
- ``fp_empty_share``: share of empty reference slices with any predicted pixel.

:class:`PostProcess` is the decision applied to a probability (or score) volume: a threshold,
then optionally the 3-D clean-up of :func:`napari_neuroseg.analysis.cleanup.clean_labels`
(drop components smaller than ``min_voxels`` or lying on one slice).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_neuroseg.analysis.cleanup import clean_labels
from napari_neuroseg.dataset import Dataset

__all__ = ["PostProcess", "Volume", "dice", "patient_volumes", "score_volumes", "volume_masks"]


@dataclass(frozen=True)
class PostProcess:
    """Threshold, then optionally drop small or single-slice 3-D components.

    Attributes
    ----------
    threshold : float
        A voxel is abnormal where the score is at least this.
    min_voxels : int
        Drop 3-D components (26-connected) with fewer voxels; 0 keeps all sizes.
    drop_single_slice : bool
        Drop 3-D components that lie on one slice.
    """

    threshold: float = 0.5
    min_voxels: int = 0
    drop_single_slice: bool = False

    @property
    def cleans(self) -> bool:
        """Whether any clean-up runs after the threshold."""
        return self.min_voxels > 0 or self.drop_single_slice

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """The boolean ``(Z, H, W)`` mask of a score volume."""
        mask = np.asarray(scores) >= self.threshold
        if not self.cleans or not mask.any():
            return mask
        return clean_labels(mask.astype(np.uint8), min_voxels=self.min_voxels,
                            drop_single_slice=self.drop_single_slice).labels > 0

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    def describe(self) -> str:
        """E.g. ``"p >= 0.5, drop < 200 voxels and single-slice components"``."""
        parts = []
        if self.min_voxels:
            parts.append(f"< {self.min_voxels} voxels")
        if self.drop_single_slice:
            parts.append("single-slice")
        clean = f", drop {' and '.join(parts)} components" if parts else ", no clean-up"
        return f">= {self.threshold:g}{clean}"


@dataclass
class Volume:
    """One patient's slices as a volume.

    Attributes
    ----------
    patient : str
    items : list of int
        Dataset item indices, one per present slice, in plane order.
    planes : numpy.ndarray
        The plane of each present slice in the ``(depth, H, W)`` volume.
    depth : int
        Planes from the first to the last slice number.
    truth : numpy.ndarray
        ``(n_present, H, W)`` bool reference masks of the present slices.
    """

    patient: str
    items: list[int]
    planes: np.ndarray
    depth: int
    truth: np.ndarray = field(repr=False)

    def place(self, slices: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``(n_present, H, W)`` per-slice arrays as a ``(depth, H, W)`` volume (gaps
        ``fill``)."""
        out = np.full((self.depth, *slices.shape[1:]), fill, dtype=slices.dtype)
        out[self.planes] = slices
        return out


def patient_volumes(data: Dataset, indices: Sequence[int] | None = None) -> list[Volume]:
    """The volumes of the patients of ``data.items[indices]`` (all items by default).

    Items are grouped by ``extra["study"]`` when present (a Kaggle study), else by
    ``patient_id``; within a group, slice ``n`` (``slice_index``) sits at plane ``n - first``.
    Items without a ``slice_index`` are stacked in dataset order.

    Raises
    ------
    ValueError
        If two items of a volume have the same slice number.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i in range(len(data.items)) if indices is None else indices:
        item = data.items[int(i)]
        groups[str(item.extra.get("study") or item.patient_id or item.id)].append(int(i))
    volumes = []
    for patient, members in groups.items():
        numbers = [data.items[i].slice_index for i in members]
        if any(n is None for n in numbers):
            numbers = list(range(len(members)))
        order = np.argsort(numbers, kind="stable")
        members = [members[k] for k in order]
        numbers = np.asarray([numbers[k] for k in order], dtype=int)
        if np.any(np.diff(numbers) == 0):
            raise ValueError(f"{data.path}: volume {patient} has two items with the same "
                             f"slice number")
        truth = np.stack([data.read_mask(data.items[i]) > 0 for i in members])
        volumes.append(Volume(patient, members, numbers - numbers[0],
                              int(numbers[-1] - numbers[0] + 1), truth))
    return volumes


def volume_masks(volume: Volume, scores: np.ndarray, post: PostProcess) -> np.ndarray:
    """The present slices' predicted masks: ``scores`` (``(n_present, H, W)``) placed in the
    volume, thresholded and cleaned there, and read back at the present planes."""
    return post.apply(volume.place(scores))[volume.planes]


def score_volumes(volumes: Sequence[Volume],
                  scores: Mapping[int, np.ndarray] | Callable[[Volume], np.ndarray],
                  post: PostProcess) -> dict[str, Any]:
    """Per-volume and per-slice scores of the predictions after ``post``.

    Parameters
    ----------
    volumes : sequence of Volume
    scores : mapping or callable
        Item index -> ``(H, W)`` score map, or ``volume -> (n_present, H, W)`` scores.
    post : PostProcess

    Returns
    -------
    dict
        ``volume_dice`` (mean over volumes; a volume with an empty reference and an empty
        prediction scores 1), ``volume_dice_by_patient``, ``slice_dice_tumour``,
        ``tumour_slices``, ``missed_tumour_slices``, ``empty_slices``, ``fp_empty_slices``,
        ``fp_empty_share``, ``volumes``, ``predicted_voxels`` and ``reference_voxels``.
    """
    by_patient: dict[str, float] = {}
    slice_dice: list[float] = []
    counts = dict.fromkeys(("tumour_slices", "missed_tumour_slices", "empty_slices",
                            "fp_empty_slices", "predicted_voxels", "reference_voxels"), 0)
    for volume in volumes:
        raw = (scores(volume) if callable(scores)
               else np.stack([scores[i] for i in volume.items]))
        pred, truth = volume_masks(volume, raw, post), volume.truth
        by_patient[volume.patient] = dice(pred, truth)
        t_any = truth.reshape(len(truth), -1).any(1)
        p_any = pred.reshape(len(pred), -1).any(1)
        hit = (pred & truth).reshape(len(pred), -1).any(1)
        slice_dice.extend(dice(pred[k], truth[k]) for k in np.flatnonzero(t_any))
        counts["tumour_slices"] += int(t_any.sum())
        counts["missed_tumour_slices"] += int((t_any & ~hit).sum())
        counts["empty_slices"] += int((~t_any).sum())
        counts["fp_empty_slices"] += int((~t_any & p_any).sum())
        counts["predicted_voxels"] += int(pred.sum())
        counts["reference_voxels"] += int(truth.sum())
    return {
        "volume_dice": float(np.mean(list(by_patient.values()))) if by_patient else 0.0,
        "volume_dice_by_patient": by_patient,
        "slice_dice_tumour": float(np.mean(slice_dice)) if slice_dice else 0.0,
        **counts,
        "fp_empty_share": counts["fp_empty_slices"] / max(counts["empty_slices"], 1),
        "volumes": len(by_patient),
    }


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total
