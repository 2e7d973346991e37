"""Lazy tile inference: tiles with halos, blending, caching, a request queue, level choice.

Knows nothing of files, napari or how a model is built: a predictor is any callable from a
float32 NCHW batch to dense ``(N, K, H, W)`` or per-tile ``(N, K)`` outputs. See
``docs/engine.md``.
"""

from napari_neuroseg.engine.aggregate import (
    MemoryAggregator,
    ZarrAggregator,
    labels_from_probabilities,
)
from napari_neuroseg.engine.blending import BLEND_MODES, blend_weights
from napari_neuroseg.engine.cache import CacheKey, TileCache, TileKey
from napari_neuroseg.engine.choices import Activation, BlendMode, OutputMode
from napari_neuroseg.engine.compute import TileComputer, TileCounts, TileOutput
from napari_neuroseg.engine.errors import EngineError, TileError
from napari_neuroseg.engine.levels import LevelChoice, ResampledArray, choose_level
from napari_neuroseg.engine.options import EngineOptions
from napari_neuroseg.engine.predict import (
    PredictionResult,
    iter_predict_tiles,
    predict_region,
    predict_volume,
)
from napari_neuroseg.engine.queue import TileQueue, TileRequest, iter_queue, run_worker
from napari_neuroseg.engine.tiling import Region, Tile, TileGrid, read_patches

__all__ = [
    "BLEND_MODES",
    "Activation",
    "BlendMode",
    "CacheKey",
    "EngineError",
    "EngineOptions",
    "LevelChoice",
    "MemoryAggregator",
    "OutputMode",
    "PredictionResult",
    "Region",
    "ResampledArray",
    "Tile",
    "TileCache",
    "TileComputer",
    "TileCounts",
    "TileError",
    "TileGrid",
    "TileKey",
    "TileOutput",
    "TileQueue",
    "TileRequest",
    "ZarrAggregator",
    "blend_weights",
    "choose_level",
    "iter_predict_tiles",
    "iter_queue",
    "labels_from_probabilities",
    "predict_region",
    "predict_volume",
    "read_patches",
    "run_worker",
]
