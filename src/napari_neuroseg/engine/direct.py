"""Reading boxes of an image without dask when the array names the reader behind it.

A slide level reaches the engine as the dask array napari displays. Each dask ``compute()``
costs several milliseconds of graph work (see the Readers section of ``docs/benchmarks.md``),
more than decoding a 256 px tile, so tile reads go straight to the array-like behind the
level when the level names one.

The contract is one attribute: a dask array that is a plain view of an array-like ``reader``
(``shape``, ``dtype`` and ``__getitem__`` with unit-step slices returning numpy, safe to call
from several threads at once) may carry it as ``array.<DIRECT_READER_ATTR>``. The slide
readers set it on their level arrays; the engine only reads it and never imports them. Any
derived dask array (a slice, a rechunk) lacks the attribute and is computed through dask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

#: Name of the attribute through which a dask array names its direct reader. The slide
#: readers (``napari_neuroseg.io._slide_common``) spell the same name.
DIRECT_READER_ATTR = "neuroseg_direct_reader"

Box = tuple[slice, slice]


def direct_reader(array: Any) -> Any | None:
    """The array-like a dask array declares as its direct reader, or ``None``.

    Parameters
    ----------
    array : array-like
        Usually a dask array; anything else gives ``None``.

    Returns
    -------
    object or None
        The reader, when ``array`` names one of the same shape and dtype.
    """
    if not dask.is_dask_collection(array):
        return None
    reader = getattr(array, DIRECT_READER_ATTR, None)
    if reader is None:
        return None
    if tuple(reader.shape) != tuple(array.shape) or np.dtype(reader.dtype) != array.dtype:
        return None
    return reader


def load_boxes(array: Any, boxes: Sequence[Box]) -> list[np.ndarray]:
    """Load in-image boxes of ``array`` as numpy arrays, by the cheapest route available.

    Parameters
    ----------
    array : array-like
        A dask array with a direct reader (each box is one reader call, no dask graph), any
        other dask array (all boxes in one ``dask.compute``, read in parallel), or any object
        with basic slicing (numpy, :class:`~napari_neuroseg.engine.levels.ResampledArray`).
    boxes : sequence of (slice, slice)
        Unit-step slices along y and x, inside the array.

    Returns
    -------
    list of numpy.ndarray
        One array per box, in the array's dtype.
    """
    reader = direct_reader(array)
    if reader is not None:
        return [np.asarray(reader[box]) for box in boxes]
    if dask.is_dask_collection(array):
        return [np.asarray(data) for data in dask.compute(*[array[box] for box in boxes])]
    return [np.asarray(array[box]) for box in boxes]
