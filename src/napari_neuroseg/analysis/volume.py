"""A model over a CT or MRI volume: per-slice segmentation, per-slice classification.

MRI FLAIR segmentation runs through the tile engine plane by plane. CT metastasis
classification prepares every slice as the seed does (brain extraction, then the runner's
40/80 window), classifies it, and pools the slice probabilities to one patient-level value
(the maximum: a patient is positive when any slice is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_neuroseg.analysis.slide import AnalysisError, Predictor
from napari_neuroseg.engine import EngineOptions, PredictionResult, TileCache, predict_volume
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.ct import slice_quality
from napari_neuroseg.preprocess.ct_input import ct_model_input


def _check_volume(image: LazyImage, spec: ModelSpec) -> int:
    if image.modality not in ("CT", "MR"):
        raise AnalysisError(f"{spec.name} runs on CT or MRI volumes; {image.name} is a "
                            f"{image.modality}")
    if not image.axes.startswith("zyx"):
        raise AnalysisError(f"{image.name}: expected a (z, y, x[, c]) volume, got {image.axes!r}")
    channels = image.shape[3] if image.axes == "zyxc" else 1
    if channels != len(spec.input.channels):
        raise AnalysisError(
            f"{spec.name} expects {len(spec.input.channels)} channel(s) "
            f"{spec.input.channels}; {image.name} has {channels}"
        )
    return channels


def segment_volume(
    image: LazyImage,
    predictor: Predictor,
    spec: ModelSpec,
    *,
    planes: range | None = None,
    batch_size: int = 8,
    cache: TileCache | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictionResult:
    """Segment every plane (or ``planes``) of a volume with a 2D model.

    Parameters
    ----------
    image : LazyImage
        A CT or MR volume (``"zyx"``, or ``"zyxc"`` for multi-channel stacks such as the LGG
        pre-contrast/FLAIR/post-contrast slices).
    predictor : callable
        Usually a :class:`~napari_neuroseg.models.runner.ModelRunner` (it normalises).
    spec : ModelSpec
        A semantic-segmentation model.
    planes : range, optional
        The z planes to segment; all by default.
    batch_size : int
        Tiles per predictor call.
    cache, should_stop, on_progress
        Passed to :func:`napari_neuroseg.engine.predict_volume`.

    Returns
    -------
    PredictionResult
        ``probabilities`` (K, Z, H, W), ``labels`` (Z, H, W), with the volume's scale and
        translate in mm.
    """
    _check_volume(image, spec)
    if spec.task != "semantic_segmentation":
        raise AnalysisError(f"{spec.name} is a {spec.task} model, not a segmentation model")
    translate = tuple(image.translate) if image.translate is not None else (0.0, 0.0, 0.0)
    # the spec's tiles with the engine's defaults: no overlap, argmax labels (unlike slides,
    # volumes do not read the spec's stride, overlap or one-class threshold)
    options = EngineOptions(patch_size=spec.input.patch_size, halo=spec.input.halo,
                            batch_size=batch_size)
    return predict_volume(
        image.levels[0],
        predictor,
        options,
        planes=planes,
        cache=cache,
        scale=tuple(image.scale),
        translate=translate,
        should_stop=should_stop,
        on_progress=on_progress,
    )


@dataclass
class SliceClassification:
    """Per-slice probabilities and the patient-level decision.

    Attributes
    ----------
    planes : numpy.ndarray
        The z indices classified.
    probabilities : numpy.ndarray
        One probability per classified slice.
    positions_mm : numpy.ndarray
        Each slice's position along z in mm (from the volume's scale and translate).
    patient_probability : float
        The maximum over the usable slices.
    threshold : float
        The decision threshold (the model's, unless overridden).
    usable : numpy.ndarray or None
        Per classified slice, whether it passed the slice-quality filter the model was
        trained with (``spec.extra["min_brain_fraction"]``); None when the model has none.
        When no slice passes, all count.
    """

    planes: np.ndarray
    probabilities: np.ndarray
    positions_mm: np.ndarray
    patient_probability: float
    threshold: float
    usable: np.ndarray | None = None

    @property
    def positive(self) -> bool:
        """The patient-level decision: any slice at or above the threshold."""
        return bool(self.patient_probability >= self.threshold)

    @property
    def peak_plane(self) -> int:
        """The plane with the highest probability."""
        return int(self.planes[int(np.argmax(self.probabilities))])


def prepare_ct_slice(hu: np.ndarray, spec: ModelSpec, pixel_spacing: tuple[float, float]):
    """The network input of one slice by the steps its sidecar records: training's function,
    :func:`napari_neuroseg.preprocess.ct_input.ct_model_input` (the runner then applies
    ``spec.input.normalization``)."""
    return ct_model_input(hu, spec, pixel_spacing)


def classify_slices(
    image: LazyImage,
    predictor: Predictor,
    spec: ModelSpec,
    *,
    planes: range | None = None,
    threshold: float | None = None,
    batch_size: int = 8,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SliceClassification:
    """Classify every slice of a CT series and pool them to a patient-level probability.

    Parameters
    ----------
    image : LazyImage
        A CT volume in HU (``"zyx"``).
    predictor : callable
        Returns one probability per slice, ``(N, 1)``.
    spec : ModelSpec
        A slice-classification model (``ct-metastasis``).
    planes : range, optional
        Slices to classify; all by default. Slices are decoded one batch at a time.
    threshold : float, optional
        Overrides ``spec.threshold`` for the decision.
    batch_size : int
    should_stop, on_progress
        Cancellation and progress callbacks (``on_progress(done, total)``).

    Returns
    -------
    SliceClassification
    """
    _check_volume(image, spec)
    if spec.task != "slice_classification":
        raise AnalysisError(f"{spec.name} is a {spec.task} model, not a slice classifier")
    volume = image.levels[0]
    zs = np.arange(volume.shape[0])[planes if planes is not None else slice(None)]
    spacing = (float(image.scale[1]), float(image.scale[2]))
    min_brain = spec.extra.get("min_brain_fraction")
    probabilities: list[float] = []
    usable: list[bool] = []
    for start in range(0, len(zs), batch_size):
        if should_stop is not None and should_stop():
            break
        chunk = zs[start : start + batch_size]
        slices = np.asarray(volume[chunk[0] : chunk[-1] + 1])
        batch = np.stack([prepare_ct_slice(s, spec, spacing) for s in slices])[:, None]
        out = np.asarray(predictor(batch), dtype=np.float64).reshape(len(chunk), -1)
        probabilities.extend(out[:, -1].tolist())
        if min_brain is not None:
            usable.extend(slice_quality(s, spacing=spacing, min_brain_fraction=float(min_brain))
                          .usable for s in slices)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(zs)), len(zs))
    probs = np.asarray(probabilities)
    done = zs[: len(probs)]
    z0 = float(image.translate[0]) if image.translate is not None else 0.0
    ok = np.asarray(usable, dtype=bool) if min_brain is not None else None
    pooled = probs[ok] if ok is not None and ok.any() else probs  # as in training
    return SliceClassification(
        planes=done,
        probabilities=probs,
        positions_mm=z0 + done * float(image.scale[0]),
        patient_probability=float(pooled.max()) if pooled.size else float("nan"),
        threshold=float(spec.threshold if threshold is None else threshold),
        usable=ok,
    )
