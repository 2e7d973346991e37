"""What the CT widget shows, computed without a viewer.

Per-slice classification in chunks (so a worker can report progress and partial curves), the
patient-level decision at an adjustable threshold, slice positions along the stack (the real,
possibly uneven, positions when the reader recorded them), a Grad-CAM heatmap on one slice
in that slice's own pixel grid, brain masks slice by slice from the current slice outwards,
and the masked volume in ml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from skimage.transform import resize

from napari_neuroseg.analysis.slide import Predictor
from napari_neuroseg.analysis.volume import (
    SliceClassification,
    classify_slices,
    prepare_ct_slice,
)
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.ct import WINDOW_PRESETS, brain_mask

__all__ = [
    "PatientDecision",
    "brain_masks",
    "decision_text",
    "gradcam_target",
    "iter_classify",
    "mask_volume_ml",
    "outward_planes",
    "patient_decision",
    "slice_gradcam",
    "slice_positions_mm",
    "slice_thicknesses_mm",
    "window_limits",
]


def slice_positions_mm(image: LazyImage) -> np.ndarray:
    """Each slice's position along the stack normal in mm.

    The reader's ``slice_positions_mm`` (true positions, uneven gaps included) when it
    recorded one per slice of this (not resampled) volume, else ``translate + index *
    scale`` along z.
    """
    n = int(image.shape[0])
    recorded = image.metadata.get("slice_positions_mm")
    if recorded is not None and len(recorded) == n and not image.metadata.get("resampled"):
        return np.asarray(recorded, dtype=np.float64)
    z0 = float(image.translate[0]) if image.translate is not None else 0.0
    return z0 + np.arange(n) * float(image.scale[0])


def iter_classify(
    image: LazyImage,
    predictor: Predictor,
    spec: ModelSpec,
    *,
    chunk: int = 4,
    threshold: float | None = None,
) -> Iterator[SliceClassification]:
    """:func:`~napari_neuroseg.analysis.classify_slices` a few slices at a time.

    Yields
    ------
    SliceClassification
        The slices classified so far (the last one yielded covers the whole stack); a
        consumer that stops iterating stops the work.
    """
    n = int(image.shape[0])
    planes: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for start in range(0, n, max(int(chunk), 1)):
        part = classify_slices(image, predictor, spec, planes=range(start, min(start + chunk, n)),
                               threshold=threshold, batch_size=chunk)
        planes.append(part.planes)
        probabilities.append(part.probabilities)
        done, probs = np.concatenate(planes), np.concatenate(probabilities)
        yield SliceClassification(
            planes=done,
            probabilities=probs,
            positions_mm=slice_positions_mm(image)[done],
            patient_probability=float(probs.max()),
            threshold=part.threshold,
        )


class PatientDecision(NamedTuple):
    """The patient-level call: the maximum over slices against a threshold."""

    positive: bool
    probability: float
    threshold: float
    peak_plane: int
    peak_position_mm: float


def patient_decision(result: SliceClassification, threshold: float | None = None
                     ) -> PatientDecision:
    """Decide from per-slice probabilities at ``threshold`` (default: the result's own).

    Parameters
    ----------
    result : SliceClassification
        Must hold at least one slice.
    threshold : float, optional
        Overrides ``result.threshold``.
    """
    if result.probabilities.size == 0:
        raise ValueError("no slice was classified")
    t = float(result.threshold if threshold is None else threshold)
    peak = int(np.argmax(result.probabilities))
    probability = float(result.probabilities[peak])
    return PatientDecision(probability >= t, probability, t, int(result.planes[peak]),
                           float(result.positions_mm[peak]))


def decision_text(decision: PatientDecision) -> str:
    """One line for the user, e.g. ``POSITIVE: max p = 0.62 >= 0.10 (slice 12, z = 35.0 mm)``."""
    word, sign = ("POSITIVE", ">=") if decision.positive else ("NEGATIVE", "<")
    return (f"{word}: max p = {decision.probability:.3f} {sign} {decision.threshold:.2f} "
            f"(peak slice {decision.peak_plane}, z = {decision.peak_position_mm:.1f} mm)")


def window_limits(preset: str | tuple[float, float]) -> tuple[float, float]:
    """Contrast limits (HU) of a window preset name or a ``(centre, width)`` pair."""
    centre, width = WINDOW_PRESETS[preset] if isinstance(preset, str) else preset
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    return float(centre - width / 2), float(centre + width / 2)


def gradcam_target(model: Any, spec: ModelSpec) -> str:
    """The layer Grad-CAM explains: ``spec.extra["gradcam_layer"]``, ``layer4`` (ResNet) or
    the last convolution."""
    from torch import nn

    if spec.extra.get("gradcam_layer"):
        return str(spec.extra["gradcam_layer"])
    names = dict(model.named_modules())
    if "layer4" in names:
        return "layer4"
    convs = [name for name, module in names.items() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution to explain with Grad-CAM")
    return convs[-1]


def slice_gradcam(model: Any, spec: ModelSpec, hu_slice: np.ndarray,
                  pixel_spacing: tuple[float, float], target_layer: str | None = None
                  ) -> np.ndarray:
    """Grad-CAM of the metastasis score on one CT slice, on the slice's own pixel grid.

    The slice is prepared as for classification (brain extraction, resize to the model's
    patch size, the spec's normalisation); the heatmap is resized back to the slice.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (a :class:`~napari_neuroseg.models.runner.ModelRunner`'s ``model``).
    spec : ModelSpec
        Its spec.
    hu_slice : numpy.ndarray
        ``(H, W)`` slice in HU.
    pixel_spacing : (float, float)
        Row and column spacing in mm.
    target_layer : str, optional
        Default: :func:`gradcam_target`.

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)`` in ``[0, 1]``.
    """
    import torch

    from napari_neuroseg.models.gradcam import grad_cam
    from napari_neuroseg.models.runner import normalize

    hu = np.asarray(hu_slice, dtype=np.float32)
    device = next(model.parameters()).device
    x = torch.from_numpy(prepare_ct_slice(hu, spec, pixel_spacing)[None, None]).to(device)
    x = normalize(x, spec.input.normalization)
    cam = grad_cam(model, x, target_layer or gradcam_target(model, spec), class_index=-1)[0]
    if cam.shape != hu.shape:
        cam = resize(cam, hu.shape, order=1, preserve_range=True, anti_aliasing=False)
    return np.clip(cam, 0.0, 1.0).astype(np.float32)


def outward_planes(current: int, n: int) -> list[int]:
    """``0..n-1`` ordered by distance from ``current`` (the slice on screen comes first)."""
    current = min(max(int(current), 0), n - 1) if n else 0
    return sorted(range(n), key=lambda z: (abs(z - current), z))


def brain_masks(
    volume: Any,
    pixel_spacing: tuple[float, float],
    planes: Sequence[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`~napari_neuroseg.preprocess.ct.brain_mask` of each plane, one slice decoded at a
    time.

    Yields
    ------
    (int, numpy.ndarray)
        The plane and its ``(H, W)`` bool mask, in the order of ``planes`` (all by default).
    """
    for z in range(volume.shape[0]) if planes is None else planes:
        if should_stop is not None and should_stop():
            return
        yield int(z), brain_mask(np.asarray(volume[int(z)]), spacing=pixel_spacing)


def slice_thicknesses_mm(positions_mm: Sequence[float]) -> np.ndarray:
    """The stretch of the stack each slice stands for: half the gap to each neighbour (the
    end slices count their one gap twice), so uneven spacing is weighted correctly."""
    positions = np.asarray(positions_mm, dtype=np.float64)
    if positions.size < 2:
        raise ValueError("need at least two slice positions to know the slice spacing")
    gaps = np.abs(np.diff(positions))
    return 0.5 * (np.r_[gaps[0], gaps] + np.r_[gaps, gaps[-1]])


def mask_volume_ml(mask: np.ndarray, positions_mm: Sequence[float],
                   pixel_spacing: tuple[float, float]) -> float:
    """Volume of a ``(z, y, x)`` mask in ml from the slice positions and pixel spacing (mm)."""
    mask = np.asarray(mask)
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1) * float(pixel_spacing[0]) * float(
        pixel_spacing[1])
    return float(np.sum(areas * slice_thicknesses_mm(positions_mm)) / 1000.0)
