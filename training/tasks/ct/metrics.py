"""Metrics and plots of the ``ct`` task: patient-level decisions from max-pooled slices.

A patient's score is the maximum of its slices' metastasis probabilities (the CT metastasis
recipe's MAX pooling; the plugin's :func:`napari_neuroseg.analysis.volume.classify_slices`
pools the same way). The decision threshold is the one maximising patient-level F1
(:func:`training.metrics.threshold_search`) on a grid of candidates.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.metrics import patient_max_pool, patient_metrics, roc_auc, threshold_search
from training.report import plot_confusion_matrix, plot_probability_histograms

__all__ = [
    "PatientScores",
    "candidate_thresholds",
    "ct_plots",
    "patient_scores",
    "scores_metrics",
    "slice_probabilities",
]


class PatientScores:
    """Slice probabilities pooled to patients.

    Parameters
    ----------
    patient_ids : sequence
        Patient of each slice.
    slice_labels : sequence of int
        Label of each slice (the patient's, in converted datasets).
    slice_probs : array-like
        Metastasis probability of each slice.
    """

    def __init__(self, patient_ids: Sequence[Hashable], slice_labels: Sequence[int],
                 slice_probs: Any) -> None:
        self.slice_labels = np.asarray(slice_labels, dtype=np.int64)
        self.slice_probs = np.asarray(slice_probs, dtype=np.float64).reshape(-1)
        self.patients, self.scores = patient_max_pool(list(patient_ids), self.slice_probs)
        by_patient: dict[Hashable, int] = {}
        for pid, label in zip(patient_ids, self.slice_labels, strict=True):
            by_patient[pid] = max(by_patient.get(pid, 0), int(label))
        self.labels = np.array([by_patient[p] for p in self.patients], dtype=np.int64)


def candidate_thresholds(step: float | None) -> np.ndarray | None:
    """``step, 2 * step, ... < 1`` (rounded), or None (every distinct score) without a step."""
    if step is None:
        return None
    if not 0.0 < step < 1.0:
        raise ValueError(f"threshold_step must be in (0, 1) or null, got {step}")
    return np.round(np.arange(step, 1.0 - 1e-9, step), 6)


def _none_if_nan(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def scores_metrics(scores: PatientScores, threshold: float | None, step: float | None
                   ) -> dict[str, Any]:
    """Patient-level F1, sensitivity, specificity, AUC and confusion counts; slice AUC.

    Parameters
    ----------
    scores : PatientScores
    threshold : float or None
        The decision threshold to report at; None reports at the F1-maximising threshold.
    step : float or None
        Grid of the threshold search (:func:`candidate_thresholds`).

    Returns
    -------
    dict
        ``threshold``, ``patient_auc``, ``patient_f1``, ``patient_sensitivity``,
        ``patient_specificity``, ``patient_precision``, ``patient_accuracy`` and
        ``tp``/``fp``/``tn``/``fn`` at ``threshold``; ``patient_f1_at_0.5``,
        ``patient_sensitivity_at_0.5``, ``patient_specificity_at_0.5``; ``slice_auc``;
        ``search``: the F1-maximising ``threshold`` with its ``f1``, ``sensitivity`` and
        ``specificity``.
    """
    search = threshold_search(scores.labels, scores.scores, candidate_thresholds(step))
    chosen = search["threshold"] if threshold is None else float(threshold)
    at = patient_metrics(scores.labels, scores.scores, chosen)
    half = patient_metrics(scores.labels, scores.scores, 0.5)
    out: dict[str, Any] = {"threshold": chosen, "patient_auc": at["auc"]}
    for key in ("f1", "sensitivity", "specificity", "precision", "accuracy"):
        out[f"patient_{key}"] = at[key]
    for key in ("f1", "sensitivity", "specificity"):
        out[f"patient_{key}_at_0.5"] = half[key]
    out["slice_auc"] = _none_if_nan(roc_auc(scores.slice_labels, scores.slice_probs))
    out.update({key: at[key] for key in ("tp", "fp", "tn", "fn")})
    out["search"] = {key: search[key] for key in ("threshold", "f1", "sensitivity",
                                                   "specificity")}
    return out


def slice_probabilities(model: nn.Module, loader: Any, device: torch.device
                        ) -> tuple[np.ndarray, list[int]]:
    """Sigmoid probabilities of every slice of ``loader`` and the slices' item indices."""
    model.eval()
    probs, items = [], []
    with torch.no_grad():
        for x, _, index in loader:
            x = x.to(device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            probs.append(torch.sigmoid(model(x).float()).reshape(-1).cpu().numpy())
            items.extend(int(i) for i in index)
    return (np.concatenate(probs) if probs else np.zeros(0)), items


def patient_scores(probs: np.ndarray, items: Sequence[int], patient_ids: Sequence[Hashable],
                   labels: Sequence[int]) -> PatientScores:
    """:class:`PatientScores` of slices given by their item indices."""
    return PatientScores([patient_ids[i] for i in items], [labels[i] for i in items], probs)


def ct_plots(scores: PatientScores, threshold: float, class_names: Sequence[str],
             folder: Path) -> list[Path]:
    """Patient-score histograms per class and the confusion matrix at ``threshold``."""
    p = scores.scores
    hist = plot_probability_histograms(np.stack([1.0 - p, p], axis=1), scores.labels,
                                       list(class_names), [1],
                                       folder / "patient_probabilities.png")
    predicted = p >= threshold
    y = scores.labels.astype(bool)
    matrix = [[int((~y & ~predicted).sum()), int((~y & predicted).sum())],
              [int((y & ~predicted).sum()), int((y & predicted).sum())]]
    confusion = plot_confusion_matrix(matrix, list(class_names),
                                      folder / "confusion_matrix.png")
    return [hist, confusion]
