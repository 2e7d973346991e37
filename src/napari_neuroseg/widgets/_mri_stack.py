"""MRI stacks in the viewer: channel layers stacked back together, and the stack dropdown.

A Kaggle LGG patient or a multi-channel TIFF opened by this plugin becomes one image layer
per channel; :func:`channel_layers` finds the siblings of one of them,
:func:`stack_from_layers` stacks them lazily into one record, and :class:`StackComboBox`
offers each stack once, named by its sequences.
"""

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from magicgui.widgets import ComboBox

from napari_neuroseg.io import LazyImage
from napari_neuroseg.widgets._common import image_layers

__all__ = ["StackComboBox", "channel_layers", "stack_from_layers", "stack_name", "stack_title"]


def channel_layers(layers: Sequence[Any], layer: Any) -> list[Any]:
    """``layer`` and its sibling channels when a reader split a multi-channel stack.

    A Kaggle LGG patient or a multi-channel TIFF opened by this plugin becomes one image layer
    per channel (napari's ``channel_axis``); their metadata still says ``"zyxc"``. The
    siblings share the source and patient and are returned in file channel order.
    """
    meta = layer.metadata.get("neuroseg", {})
    axes = str(meta.get("axes") or "")
    if "c" not in axes or layer.ndim != len(axes) - 1:
        return [layer]
    keys = ("source", "patient_id", "axes")

    def key(other: Any) -> tuple:
        return tuple(other.metadata.get("neuroseg", {}).get(k) for k in keys)

    group = [other for other in layers
             if other.__class__.__name__ == "Image" and other.data.shape == layer.data.shape
             and key(other) == key(layer)]
    names = list(meta.get("channels") or [])
    if names:
        def order(other: Any) -> int:
            hits = [i for i, n in enumerate(names) if other.name.endswith(f" {n}")]
            return hits[0] if hits else len(names)
        group.sort(key=order)
    return group


def stack_from_layers(layers: Sequence[Any]) -> LazyImage:
    """One ``"zyx"`` (one layer) or ``"zyxc"`` (one layer per channel) record, lazily stacked.

    Scale, translate and unit come from the first layer (the channels share them).
    """
    first = layers[0]
    if first.ndim != 3 or getattr(first, "rgb", False) or getattr(first, "multiscale", False):
        raise ValueError(f"{first.name}: expected a 3-D (z, y, x) stack, got "
                         f"{first.ndim}-D data")
    arrays = [layer.data if isinstance(layer.data, da.Array)
              else da.from_array(np.asarray(layer.data), chunks=(1, *layer.data.shape[1:]))
              for layer in layers]
    data = arrays[0] if len(arrays) == 1 else da.stack(arrays, axis=-1)
    meta = first.metadata.get("neuroseg", {})
    return LazyImage(
        levels=[data], axes="zyx" if len(arrays) == 1 else "zyxc",
        scale=tuple(float(s) for s in first.scale), unit=str(meta.get("unit") or "mm"),
        name=stack_name(layers), modality="MR", source=str(meta.get("source") or first.name),
        translate=tuple(float(t) for t in first.translate),
        metadata={"voxel_size": meta.get("voxel_size", "known"),
                  "channels": [layer.name for layer in layers]},
    )


def stack_name(layers: Sequence[Any]) -> str:
    """The name the layers share (an LGG patient id), else the first layer's name."""
    if len(layers) == 1:
        return str(layers[0].name)
    prefix = str(layers[0].name)
    for layer in layers[1:]:
        while not str(layer.name).startswith(prefix):
            prefix = prefix[:-1]
    return prefix.strip(" _-") or str(layers[0].name)


def stack_title(layers: Sequence[Any]) -> str:
    """What the stack dropdown calls a stack: ``"TCGA_XX (pre-contrast + FLAIR + ...)"``.

    One layer is named as it is; channel layers by the name they share and their sequences.
    """
    if len(layers) == 1:
        return str(layers[0].name)
    prefix = stack_name(layers)
    sequences = [str(layer.name)[len(prefix):].strip(" _-") if str(layer.name).startswith(
        prefix) else str(layer.name) for layer in layers]
    return f"{prefix} ({' + '.join(s or '?' for s in sequences)})"


class StackComboBox(ComboBox):
    """The MRI stack dropdown: one entry per stack (its channel layers together).

    An entry's value is the stack's first channel layer; setting any channel layer of a
    stack selects that stack.
    """

    def __init__(self, viewer: Any, **kwargs: Any) -> None:
        self._viewer = viewer
        super().__init__(choices=self._stacks, **kwargs)

    def _stacks(self, _widget: Any = None) -> list[tuple[str, Any]]:
        layers = list(self._viewer.layers)
        out, seen = [], set()
        for layer in image_layers(self._viewer, ("MR",)):
            if layer.ndim != 3 or id(layer) in seen:
                continue
            group = channel_layers(layers, layer)
            seen.update(id(member) for member in group)
            out.append((stack_title(group), group[0]))
        return out

    @property
    def value(self) -> Any:
        """The chosen stack's first channel layer (None when there is none)."""
        return ComboBox.value.fget(self)

    @value.setter
    def value(self, value: Any) -> None:
        if value is not None and value not in self.choices:
            layers = list(self._viewer.layers)
            value = next((first for first in self.choices
                          if value in channel_layers(layers, first)), value)
        ComboBox.value.fset(self, value)
