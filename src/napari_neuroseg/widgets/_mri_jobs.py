"""What the MRI widget runs in its workers: load the model, segment the stack a few planes
at a time, and clean up and measure the labels. No Qt; tests call these directly.
"""

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from napari_neuroseg.analysis import segment_volume
from napari_neuroseg.analysis.cleanup import clean_labels, min_voxels_for_volume, volume_ml
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.models.spec import ModelSpec

__all__ = ["cleanup_and_measure", "load_model", "segment_stack"]


def load_model(source: ModelSource) -> tuple[Callable[[np.ndarray], np.ndarray], ModelSpec]:
    """The predictor and spec of ``source`` (run in the worker: it builds the network)."""
    return source.runner(), source.spec()


def segment_stack(image: LazyImage, source: ModelSource, load: Callable[..., Any],
                  stop: threading.Event, planes_per_step: int = 4) -> Iterator[tuple]:
    """Load the model, then segment the stack a few planes at a time (a generator worker).

    Yields ``("model", spec)`` once, then ``("planes", range, labels, foreground)`` per step
    (``foreground``: the summed probability of the non-background classes). Ends early, without
    yielding an unfinished step, when ``stop`` is set.
    """
    predictor, spec = load(source)
    yield ("model", spec)
    depth = image.shape[0]
    for z0 in range(0, depth, planes_per_step):
        if stop.is_set():
            return
        planes = range(z0, min(z0 + planes_per_step, depth))
        result = segment_volume(image, predictor, spec, planes=planes,
                                batch_size=planes_per_step, should_stop=stop.is_set)
        if not result.complete:
            return
        probabilities = np.asarray(result.probabilities, dtype=np.float32)
        yield ("planes", planes, np.asarray(result.labels), probabilities[1:].sum(axis=0))


def cleanup_and_measure(raw: np.ndarray, *, min_size: float, size_unit: str,
                        drop_single_slice: bool, scale: Sequence[float], unit: str,
                        current: np.ndarray | None = None,
                        edited: np.ndarray | None = None) -> dict[str, Any]:
    """Clean the labels and measure them (run in a worker; pure).

    Parameters
    ----------
    raw : numpy.ndarray
        The model's labels.
    current, edited : numpy.ndarray, optional
        The labels on screen and where the user changed them (bool). There the user's value
        is the clean-up's input, and it is kept in the result whatever the options.
    """
    base = raw if edited is None else np.where(edited, current, raw)
    min_voxels = (round(min_size) if size_unit == "voxels"
                  else min_voxels_for_volume(min_size, scale, unit))
    result = clean_labels(base, min_voxels=min_voxels, drop_single_slice=drop_single_slice)
    if edited is not None and edited.any():
        result = dataclasses.replace(result, labels=np.where(edited, current, result.labels))
    return {"cleanup": result, "min_voxels": min_voxels,
            "raw_ml": volume_ml(base, scale, unit), "ml": volume_ml(result.labels, scale, unit),
            "voxels": int(np.count_nonzero(result.labels))}
