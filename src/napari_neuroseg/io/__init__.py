"""Lazy readers and atomic writers for slides, CT series and MRI stacks.

:func:`open_image` picks the reader for a path and returns :class:`LazyImage` records;
:func:`to_layer_data` turns them into napari layer data (:mod:`.layers` holds both directions
of that codec).
"""

from napari_neuroseg.io._detect import detect_format, open_image
from napari_neuroseg.io._types import LazyImage, ReaderError
from napari_neuroseg.io.layers import layer_kwargs, to_layer_data

__all__ = [
    "LazyImage",
    "ReaderError",
    "detect_format",
    "layer_kwargs",
    "open_image",
    "to_layer_data",
]
