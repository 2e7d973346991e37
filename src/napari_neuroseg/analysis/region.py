"""A model over one region of a slide at the model's resolution: nuclei and virtual H&E.

The Nuclei and Stain widgets analyse what is on screen. The widget turns the camera into a
region of level-0 pixels; the functions here cap its size, run :func:`predict_slide` over it
(the model's pyramid level, tiles with halos, blending) and turn the stitched outputs into
one result aligned with the slide:

* :func:`segment_nuclei`: HoVer-Net outputs (nuclear probability + h/v maps, see
  :class:`~napari_neuroseg.models.runner.ModelRunner`) -> instance labels by the
  marker-controlled watershed of :func:`~napari_neuroseg.models.hovernet_post.hovernet_instances`,
  with the nucleus count and density, and each nucleus's type when the model has a type
  branch (:mod:`napari_neuroseg.analysis.nuclei_types`);
* :func:`translate_stain`: an image-translation model (IHC -> H&E) -> an RGB uint8 image.

Both return a :class:`~napari_neuroseg.analysis.results.RegionResult` whose
``scale``/``translate`` place the working-grid result on the slide in world units (µm); the
result classes live in :mod:`napari_neuroseg.analysis.results` and are importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from napari_neuroseg.analysis.nuclei_types import classify_nuclei, type_image, type_names_of
from napari_neuroseg.analysis.results import UNTYPED, NucleiResult, RegionResult, nuclei_density
from napari_neuroseg.analysis.slide import AnalysisError, Predictor, SlidePlan, predict_slide
from napari_neuroseg.engine import PredictionResult, Region, TileCache
from napari_neuroseg.models.hovernet_post import PostprocessOptions, hovernet_instances
from napari_neuroseg.models.spec import ModelSpec

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_POSTPROCESS",
    "UNTYPED",
    "NucleiResult",
    "RegionResult",
    "cap_region",
    "nuclei_density",
    "nuclei_from_prediction",
    "postprocess_options",
    "segment_nuclei",
    "to_uint8_rgb",
    "translate_stain",
]

#: Largest side of an analysed region, in working pixels (4096 x 4096 at 0.5 µm/px is 2 mm).
DEFAULT_MAX_SIZE = 4096
#: :func:`hovernet_instances` options when the model's spec saves none
#: (``spec.extra["postprocess"]``, written by the nuclei training task).
DEFAULT_POSTPROCESS: dict[str, Any] = PostprocessOptions().as_dict()


def cap_region(region: Region, plan: SlidePlan,
               max_size: int = DEFAULT_MAX_SIZE) -> tuple[Region, bool]:
    """Cut ``region`` (level-0 pixels) down to about ``max_size`` working pixels a side.

    Each side longer than the limit is shortened symmetrically around its centre.

    Returns
    -------
    region : Region
        The region to analyse (``region`` itself when small enough).
    capped : bool
        Whether it was cut.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    f = plan.choice.working_mpp / plan.choice.base_mpp
    # region_from_base rounds outwards, so keep two working pixels in hand.
    limit = max(1, math.floor(max(1, max_size - 2) * f))
    bounds = [region.y0, region.x0, region.y1, region.x1]
    capped = False
    for lo, hi in ((0, 2), (1, 3)):
        if bounds[hi] - bounds[lo] > limit:
            start = (bounds[lo] + bounds[hi] - limit) // 2
            bounds[lo], bounds[hi] = start, start + limit
            capped = True
    return Region(*bounds), capped


def postprocess_options(spec: ModelSpec,
                        overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`hovernet_instances` keywords: ``overrides``, else the spec's, else defaults.

    See :meth:`PostprocessOptions.from_spec
    <napari_neuroseg.models.hovernet_post.PostprocessOptions.from_spec>`.

    Raises
    ------
    ValueError
        ``ksize`` not odd and >= 3, or a threshold outside [0, 1].
    """
    return PostprocessOptions.from_spec(spec, overrides).as_dict()


def to_uint8_rgb(values: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """An image-translation output ``(3, H, W)`` as an ``(H, W, 3)`` uint8 image.

    :class:`~napari_neuroseg.models.runner.ModelRunner` already maps the network's output
    range (the spec's ``normalization["out_range"]``, [-1, 1] for a CycleGAN) to [0, 1]; this
    multiplies by the normalisation's ``scale`` (255), rounds and clips.
    """
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise AnalysisError(f"{spec.name}: expected a (3, H, W) output, got {array.shape}")
    scale = float(spec.input.normalization.get("scale", 255.0))
    rgb = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


def _predict(plan: SlidePlan, predictor: Predictor, region: Region | None, max_size: int,
             options: dict[str, Any]) -> tuple[PredictionResult, Region, bool]:
    full = Region(0, 0, int(plan.image.shape[0]), int(plan.image.shape[1]))
    region, capped = cap_region(region or full, plan, max_size)
    result = predict_slide(plan, predictor, region=region, **options)
    return result, region, capped


def _result(cls: type, data: np.ndarray, plan: SlidePlan, result: PredictionResult,
            region: Region, capped: bool, max_size: int) -> Any:
    notes = list(plan.notes)
    if capped:
        notes.append(f"view larger than {max_size} x {max_size} working pixels: only its "
                     "centre was analysed (zoom in for the rest)")
    return cls(data=data, scale=tuple(result.scale), translate=tuple(result.translate),
               region=region, working_region=result.region, mpp=plan.choice.working_mpp,
               unit=plan.image.unit, counts=result.counts, complete=result.complete,
               capped=capped, notes=notes)


def segment_nuclei(
    plan: SlidePlan,
    predictor: Predictor,
    region: Region | None = None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    postprocess: Mapping[str, Any] | None = None,
    cache: TileCache | None = None,
    model_key: str | None = None,
    batch_size: int = 4,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> NucleiResult:
    """Nuclear instance labels of ``region`` at the model's resolution.

    Parameters
    ----------
    plan : SlidePlan
        From :func:`plan_slide` with an ``instance_segmentation`` (HoVer-Net) spec.
    predictor : callable
        Returns ``(N, 4 [+ T], H, W)``: nuclear background / foreground probabilities, h and v
        maps, then type probabilities when the model has a type branch, as a ``ModelRunner``
        does. Nuclei get types when there are type probabilities and the spec names them
        (``extra["type_classes"]``).
    region : Region, optional
        Level-0 pixels; the whole slide when None. Capped to ``max_size`` working pixels.
    max_size : int
        Largest side of the analysed region in working pixels.
    postprocess : mapping, optional
        :func:`hovernet_instances` options overriding the spec's (see
        :func:`postprocess_options`).
    cache, model_key, batch_size, should_stop, on_progress
        Passed to :func:`predict_slide`.

    Returns
    -------
    NucleiResult
        int32 labels on the working grid (empty when the run was stopped early), with the
        nuclei's types when the model has a type branch.

    Raises
    ------
    AnalysisError
        The model is not an instance-segmentation model, or gives type probabilities for
        another number of types than its spec names.
    """
    spec = plan.spec
    if spec.task != "instance_segmentation":
        raise AnalysisError(f"{spec.name} is a {spec.task} model, not a nuclear instance "
                            "segmentation (HoVer-Net) model")
    postprocess_options(spec, postprocess)  # bad options fail before any tile is computed
    result, region, capped = _predict(
        plan, predictor, region, max_size,
        {"cache": cache, "model_key": model_key, "batch_size": batch_size,
         "should_stop": should_stop, "on_progress": on_progress})
    return nuclei_from_prediction(plan, result, region, postprocess=postprocess, capped=capped,
                                  max_size=max_size)


def nuclei_from_prediction(
    plan: SlidePlan,
    result: PredictionResult,
    region: Region,
    *,
    postprocess: Mapping[str, Any] | None = None,
    capped: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
) -> NucleiResult:
    """HoVer-Net post-processing of :func:`predict_slide`'s outputs over ``region``.

    The second half of :func:`segment_nuclei`, for callers that ran :func:`predict_slide`
    themselves (the batch command, one task per region).

    Parameters
    ----------
    plan : SlidePlan
        The plan the prediction ran with (an ``instance_segmentation`` spec).
    result : PredictionResult
        :func:`predict_slide` over ``region``: ``(4 [+ T], H, W)`` outputs.
    region : Region
        The level-0 pixels predicted.
    postprocess : mapping, optional
        :func:`hovernet_instances` options overriding the spec's.
    capped, max_size
        Whether ``region`` was cut down to ``max_size`` (for the result's notes).

    Returns
    -------
    NucleiResult
        As :func:`segment_nuclei` returns it.

    Raises
    ------
    AnalysisError
        Fewer than 4 outputs, or type probabilities for another number of types than the
        spec names.
    """
    spec = plan.spec
    options = postprocess_options(spec, postprocess)
    maps = np.asarray(result.probabilities, dtype=np.float32)
    if maps.shape[0] < 4:
        raise AnalysisError(f"{spec.name}: expected nuclear probabilities and h/v maps "
                            f"(4 or more outputs), got {maps.shape[0]}")
    type_names = type_names_of(spec, maps.shape[0])
    if result.complete:
        labels = hovernet_instances(maps[1], maps[2:4], **options)
    else:
        labels = np.zeros(maps.shape[1:], dtype=np.int32)
    nuclei = _result(NucleiResult, labels, plan, result, region, capped, max_size)
    if type_names:
        nuclei.type_names = type_names
        nuclei.types = classify_nuclei(labels, maps[4:])
        nuclei.type_labels = type_image(labels, nuclei.types)
    return nuclei


def translate_stain(
    plan: SlidePlan,
    predictor: Predictor,
    region: Region | None = None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    cache: TileCache | None = None,
    model_key: str | None = None,
    batch_size: int = 4,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RegionResult:
    """The translated (e.g. IHC -> H&E) view of ``region`` as RGB uint8.

    Parameters
    ----------
    plan : SlidePlan
        From :func:`plan_slide` with an ``image_translation`` spec.
    predictor : callable
        Returns ``(N, 3, H, W)`` in [0, 1], as a ``ModelRunner`` does.
    region : Region, optional
        Level-0 pixels; the whole slide when None. Capped to ``max_size`` working pixels.
    max_size, cache, model_key, batch_size, should_stop, on_progress
        As in :func:`segment_nuclei`.

    Returns
    -------
    RegionResult
        ``(H, W, 3)`` uint8 on the working grid.
    """
    spec = plan.spec
    if spec.task != "image_translation":
        raise AnalysisError(f"{spec.name} is a {spec.task} model, not an image-translation "
                            "(stain) model")
    result, region, capped = _predict(
        plan, predictor, region, max_size,
        {"cache": cache, "model_key": model_key, "batch_size": batch_size,
         "should_stop": should_stop, "on_progress": on_progress})
    rgb = to_uint8_rgb(result.probabilities, spec)
    return _result(RegionResult, rgb, plan, result, region, capped, max_size)
