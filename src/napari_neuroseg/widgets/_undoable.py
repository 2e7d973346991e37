"""Plugin edits of a labels layer as napari undo steps (Ctrl+Z / Ctrl+Shift+Z).

A plugin edit (merge nuclei, a 3-D clean-up...) is computed in a worker from a copy of the
labels taken on the GUI thread (``before``); its result (``after``) is written back with
:meth:`napari.layers.Labels.data_setitem` inside ``block_history`` so that it is one undo
step, exactly like a paint stroke, and the layer's paint history is kept. Only the pixels
the edit changed are written, and only where the layer still holds ``before``: what the user
painted while the worker ran is never overwritten.
"""

from typing import Any

import numpy as np

__all__ = ["write_labels"]


def write_labels(layer: Any, before: np.ndarray, after: np.ndarray) -> int:
    """Write the change ``before -> after`` into ``layer`` as one undoable step.

    Parameters
    ----------
    layer : napari.layers.Labels
        A labels layer holding an in-memory (numpy) array.
    before : numpy.ndarray
        The labels the edit was computed from: the whole layer, or its leading block
        ``layer.data[:n0, :n1, ...]`` (e.g. the segmented slices of a stack).
    after : numpy.ndarray
        The edited labels, shaped like ``before``.

    Returns
    -------
    int
        The number of pixels written (0: nothing changed, no undo step is added).

    Raises
    ------
    ValueError
        If the shapes disagree (the layer was replaced while the edit was computed).
    """
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape or before.ndim != layer.data.ndim or any(
            b > d for b, d in zip(before.shape, layer.data.shape, strict=True)):
        raise ValueError(f"{layer.name}: the labels changed shape while the edit was computed "
                         f"({before.shape} -> {after.shape}, layer {layer.data.shape}); "
                         "run it again")
    block = tuple(slice(0, n) for n in before.shape)
    current = np.asarray(layer.data[block])
    changed = (after != before) & (current == before)
    indices = np.nonzero(changed)
    if indices[0].size == 0:
        return 0
    with layer.block_history():  # one undo step, however many pixels
        layer.data_setitem(indices, after[indices].astype(layer.data.dtype, copy=False))
    return int(indices[0].size)
