"""A model over a whole-slide image: level choice, stain normalisation, tissue skipping.

:func:`plan_slide` does the per-slide work once (pick the pyramid level for the model's µm/px,
fit Macenko on a low-resolution level, compute the HSV tissue mask at 16 µm/px);
:func:`predict_slide` then runs the tile engine over any region, as often as needed (the live
viewer asks for the visible tiles, the batch command for everything).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_neuroseg.engine import (
    CacheKey,
    EngineOptions,
    LevelChoice,
    PredictionResult,
    Region,
    Tile,
    TileCache,
    choose_level,
    predict_region,
)
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.stain import MacenkoNormalizer
from napari_neuroseg.preprocess.tissue import slide_tissue_mask_at, tile_filter_from_mask

Predictor = Callable[[np.ndarray], np.ndarray]


class AnalysisError(ValueError):
    """A model and an image that do not fit together; the message says why."""


@dataclass
class SlidePlan:
    """Everything decided once per slide and model.

    Attributes
    ----------
    image : LazyImage
    spec : ModelSpec
    choice : LevelChoice
        The pyramid level used and the residual resampling factor.
    array : array-like
        The working array (the chosen level, resampled lazily when needed).
    scale, translate : tuple of float
        napari geometry of the output, in the slide's world units (µm).
    preprocess : tuple of callable
        Per-tile steps (Macenko normalisation when the spec asks for it and it is enabled).
    tile_filter : callable or None
        True for tiles with enough tissue (when the spec asks for it and it is enabled).
    preprocess_key : str
        Identifies the preprocessing for the tile cache.
    tissue : numpy.ndarray or None
        The tissue mask, at about 16 µm/px
        (:func:`~napari_neuroseg.preprocess.tissue.slide_tissue_mask_at`).
    notes : list of str
        What was decided, for the user (level, resampling, tissue fraction).
    """

    image: LazyImage
    spec: ModelSpec
    choice: LevelChoice
    array: Any
    scale: tuple[float, float]
    translate: tuple[float, float]
    preprocess: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()
    tile_filter: Callable[[Tile], bool] | None = None
    preprocess_key: str = ""
    tissue: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def working_shape(self) -> tuple[int, int]:
        """(height, width) of the working array."""
        return int(self.array.shape[0]), int(self.array.shape[1])

    def cache_key(self, model_key: str) -> CacheKey:
        """The tile-cache key for this slide, this preprocessing and ``model_key``.

        The resampling factor is part of it: a new µm/px for the slide (set by the user, or
        ``--mpp``) resamples the level to another working grid, whose tiles are other pixels.
        """
        meta = self.image.metadata
        image_key = (f"{self.image.source}|{self.image.shape}|{meta.get('level_shapes')}"
                     f"|x{self.choice.factor:.6g}")
        return CacheKey(image=image_key, model=model_key, preprocess=self.preprocess_key,
                        level=self.choice.level)

    def engine_options(self, *, batch_size: int = 8,
                       n_outputs: int | None = None) -> EngineOptions:
        """The engine options of ``spec`` on this slide, with this plan's preprocessing.

        :meth:`EngineOptions.from_spec <napari_neuroseg.engine.EngineOptions.from_spec>`
        (tile geometry, mode, blend, threshold) plus the plan's per-tile steps and tissue
        filter. :func:`predict_slide` and the live sessions use the same options.

        Parameters
        ----------
        batch_size : int
            Tiles per predictor call.
        n_outputs : int, optional
            Outputs the predictor gives per pixel, checked by the engine.

        Returns
        -------
        EngineOptions
        """
        return EngineOptions.from_spec(self.spec, batch_size=batch_size, n_outputs=n_outputs,
                                       preprocess=self.preprocess, tile_filter=self.tile_filter)


def _check_fit(image: LazyImage, spec: ModelSpec) -> None:
    if image.modality != "slide":
        raise AnalysisError(f"{spec.name} runs on slides; {image.name} is {image.modality}")
    channels = image.shape[2] if image.axes == "yxc" else 1
    if channels != len(spec.input.channels):
        raise AnalysisError(
            f"{spec.name} expects {len(spec.input.channels)} channel(s) "
            f"{spec.input.channels}; {image.name} has {channels}"
        )


def _tissue_filter(image: LazyImage, choice: LevelChoice, min_fraction: float):
    mask, mask_downsample = slide_tissue_mask_at(image.levels, choice.base_mpp)
    level0_filter = tile_filter_from_mask(mask, mask_downsample, min_fraction=min_fraction)
    k = choice.working_mpp / choice.base_mpp

    def keep(tile: Tile) -> bool:
        core = tile.core
        return bool(level0_filter((core.y0 * k, core.y1 * k, core.x0 * k, core.x1 * k)))

    return keep, mask


def plan_slide(
    image: LazyImage,
    spec: ModelSpec,
    *,
    stain_normalization: bool = True,
    tissue_only: bool = True,
    min_tissue_fraction: float = 0.05,
) -> SlidePlan:
    """Decide how ``spec`` runs over ``image``: level, preprocessing, tissue skipping.

    Parameters
    ----------
    image : LazyImage
        A slide from :func:`napari_neuroseg.io.open_image`.
    spec : ModelSpec
        The model; its ``input.resolution`` (µm/px) picks the level, its
        ``input.preprocessing`` names the steps (``"macenko"``, ``"tissue_mask"``).
    stain_normalization, tissue_only : bool
        Switch the spec's Macenko and tissue-mask steps off (they are on when the spec asks).
    min_tissue_fraction : float
        Tiles with less tissue than this are skipped.

    Returns
    -------
    SlidePlan

    Raises
    ------
    AnalysisError
        When the image is not a slide or has the wrong number of channels for the model.
    """
    _check_fit(image, spec)
    base_mpp = float(image.scale[0])
    mpps = [base_mpp * d for d in image.downsamples()]
    target_mpp = float(spec.input.resolution) if spec.input.resolution else base_mpp
    choice = choose_level(mpps, target_mpp)
    scale, translate = choice.geometry(tuple(image.translate or (0.0, 0.0)))
    notes = [f"level {choice.level} ({choice.level_mpp:.3g} µm/px) for {target_mpp:.3g} µm/px"]
    if choice.resample:
        notes.append(f"tiles resampled by {choice.factor:.3g}")
    if not image.metadata.get("mpp_known", True):
        notes.append("the slide has no MPP: the level choice assumes the scale you set")
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    key: dict[str, Any] = {}
    if "macenko" in spec.input.preprocessing and stain_normalization:
        stain_target = spec.extra.get("macenko_target")  # the stains the model was trained to
        normalizer = (MacenkoNormalizer.from_dict(stain_target) if stain_target
                      else MacenkoNormalizer())
        normalizer = normalizer.fit_slide(image.levels)
        steps.append(normalizer.transform)
        key["macenko"] = normalizer.to_dict()
        notes.append("Macenko stain normalisation fitted on a low-resolution level"
                     + (" (to the model's training stains)" if stain_target else ""))
    tile_filter, mask = None, None
    if "tissue_mask" in spec.input.preprocessing and tissue_only:
        tile_filter, mask = _tissue_filter(image, choice, min_tissue_fraction)
        notes.append(f"tissue covers {100 * mask.mean():.0f}% of the slide; other tiles skipped")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return SlidePlan(
        image=image,
        spec=spec,
        choice=choice,
        array=choice.working_array(image.levels[choice.level]),
        scale=scale,
        translate=translate,
        preprocess=tuple(steps),
        tile_filter=tile_filter,
        preprocess_key=digest[:16],
        tissue=mask,
        notes=notes,
    )


def predict_slide(
    plan: SlidePlan,
    predictor: Predictor,
    *,
    region: Region | None = None,
    model_key: str | None = None,
    cache: TileCache | None = None,
    batch_size: int = 8,
    aggregator: Any = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PredictionResult:
    """Run ``predictor`` over ``region`` (level-0 pixels; the whole slide when None).

    Parameters
    ----------
    plan : SlidePlan
    predictor : callable
        Usually a :class:`napari_neuroseg.models.runner.ModelRunner` for ``plan.spec``.
    region : Region, optional
        In level-0 pixels; mapped to the working level.
    model_key : str, optional
        Identifies the weights in the tile cache (e.g. the checkpoint's hash); needed with
        ``cache``.
    batch_size : int
        Tiles per predictor call (see :meth:`SlidePlan.engine_options`).
    cache, aggregator, should_stop, on_progress
        Passed to :func:`napari_neuroseg.engine.predict_region`.

    Returns
    -------
    PredictionResult
        Probabilities and labels on the working grid, with ``scale``/``translate`` that
        overlay them on the slide in µm.
    """
    spec = plan.spec
    working_region = None
    if region is not None:
        working_region = plan.choice.region_from_base(region, plan.working_shape)
    options = plan.engine_options(batch_size=batch_size,
                                  n_outputs=getattr(predictor, "output_channels", None))
    return predict_region(
        plan.array,
        predictor,
        options,
        region=working_region,
        cache=cache,
        cache_key=plan.cache_key(model_key or spec.name) if cache is not None else None,
        aggregator=aggregator,
        scale=plan.scale,
        translate=plan.translate,
        should_stop=should_stop,
        on_progress=on_progress,
    )
