"""The units of batch work: one slide region per task, with its model's :class:`ModelSource`.

A nuclear model's one-region input also gets the Nuclei widget's instances in its task
(:func:`segment_nuclei_region`).

A task carries everything it needs (the slide plan, the model's checkpoint path, the region),
so the same function runs in a local thread or on a dask.distributed worker.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from napari_neuroseg.analysis.region import NucleiResult, nuclei_from_prediction
from napari_neuroseg.analysis.slide import SlidePlan, predict_slide
from napari_neuroseg.engine import PredictionResult, Region, TileCache
from napari_neuroseg.models.source import ModelSource


def slide_regions(plan: SlidePlan, size: int) -> list[Region]:
    """Split the slide into level-0 regions of about ``size`` working pixels a side.

    Region edges fall on multiples of the engine's tile stride at the working level, so no
    tile is computed by two tasks.
    """
    stride = _tile_stride(plan)
    step = max(stride, (size // stride) * stride)
    k = plan.choice.working_mpp / plan.choice.base_mpp
    h, w = plan.working_shape
    base_h, base_w = plan.image.shape[0], plan.image.shape[1]
    regions = []
    for y in range(0, h, step):
        for x in range(0, w, step):
            regions.append(Region(int(y * k), int(x * k), min(base_h, round((y + step) * k)),
                                  min(base_w, round((x + step) * k))))
    return regions


def one_region_size(plan: SlidePlan) -> int:
    """The smallest ``size`` for which :func:`slide_regions` makes one region of the slide."""
    stride = _tile_stride(plan)
    return -(-max(plan.working_shape) // stride) * stride


def _tile_stride(plan: SlidePlan) -> int:
    """The engine's tile stride at the working level, in working pixels."""
    spec = plan.spec
    return spec.input.patch_size[0] - 2 * spec.input.halo - int(spec.extra.get("overlap", 0))


def cache_dir(root: Path, plan: SlidePlan, source: ModelSource) -> Path:
    """The on-disk tile cache of one slide and model (what makes an interrupted run resume)."""
    name = hashlib.sha256(f"{plan.image.source}|{source.key()}".encode()).hexdigest()[:16]
    return root / name


def predict_slide_region(plan: SlidePlan, source: ModelSource, region: Region,
                         cache_root: str | None = None) -> tuple[Region, np.ndarray, np.ndarray]:
    """One task: predict ``region`` (level-0 pixels) of a planned slide.

    Returns
    -------
    region : Region
        The region on the working grid.
    probabilities : numpy.ndarray
        ``(K, h, w)`` float32.
    covered : numpy.ndarray
        ``(h, w)`` bool: pixels some tile contributed to (False where tissue was skipped).
    """
    return _outputs(_predict_region(plan, source, region, cache_root))


def segment_nuclei_region(
    plan: SlidePlan, source: ModelSource, region: Region, cache_root: str | None = None
) -> tuple[Region, np.ndarray, np.ndarray, NucleiResult]:
    """One task: :func:`predict_slide_region` plus the Nuclei widget's instances.

    The HoVer-Net post-processing (the spec's saved options) and the nuclei's types run as in
    :func:`napari_neuroseg.analysis.region.segment_nuclei`, on the same outputs. Only
    meaningful when ``region`` is the whole slide: nuclei cut by a region's edge would be
    counted twice.

    Returns
    -------
    region, probabilities, covered
        As :func:`predict_slide_region`.
    nuclei : NucleiResult
        Instance labels (int32, on the working grid) and the nuclei's types.
    """
    result = _predict_region(plan, source, region, cache_root)
    return (*_outputs(result), nuclei_from_prediction(plan, result, region))


def _predict_region(plan: SlidePlan, source: ModelSource, region: Region,
                    cache_root: str | None) -> PredictionResult:
    cache = None
    if cache_root is not None:
        cache = TileCache(max_bytes=64 * 2**20,
                          directory=cache_dir(Path(cache_root), plan, source))
    return predict_slide(plan, source.runner(), region=region, model_key=source.key(),
                         cache=cache, batch_size=source.batch_size)


def _outputs(result: PredictionResult) -> tuple[Region, np.ndarray, np.ndarray]:
    covered = result.covered if result.covered is not None else np.ones(
        np.shape(result.labels), bool)
    return result.region, np.asarray(result.probabilities, np.float32), np.asarray(covered)
