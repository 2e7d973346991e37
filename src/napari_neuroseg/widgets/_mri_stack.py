"""The MRI stack dropdown: channel layers offered together, once per stack.

A Kaggle LGG patient or a multi-channel TIFF opened by this plugin becomes one image layer
per channel; :func:`~napari_neuroseg.io.layers.channel_layers` finds the siblings of one of
them, :func:`~napari_neuroseg.io.layers.stack_from_layers` stacks them lazily into one
record, and :class:`StackComboBox` offers each stack once, named by its sequences.
"""

from collections.abc import Sequence
from typing import Any

from magicgui.widgets import ComboBox

from napari_neuroseg.io.layers import channel_layers, image_layers, stack_name

__all__ = ["StackComboBox", "stack_title"]


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
        for layer in image_layers(self._viewer.layers, ("MR",)):
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
