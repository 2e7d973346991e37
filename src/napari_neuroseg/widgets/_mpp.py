"""The slide pixel size (µm/px) an analysis widget uses: shown, explained, and settable.

A layer this plugin opened says where its µm/px comes from (``metadata["neuroseg"]``:
``mpp_source``, ``mpp_known``); a layer napari's own reader opened has no unit at all and is
taken as 1 µm/px, which doubles a nuclei count on a 0.5 µm/px tile. :class:`MppField` shows the
value in use and its origin under the slide chooser, and a new value sets the layer's scale
(y and x), so the layer, its results and the analysis plan all follow it: the widgets re-plan
when the layer's scale changes.
"""

from typing import Any

from magicgui.widgets import Container, FloatSpinBox, Label

__all__ = ["MppField", "layer_mpp", "mpp_origin"]

MIN_MPP, MAX_MPP = 0.01, 100.0


def layer_mpp(layer: Any) -> float | None:
    """The layer's pixel size along x in its world unit (µm for slides); None: no layer."""
    if layer is None:
        return None
    return float(layer.scale[-1])


def mpp_origin(layer: Any) -> str:
    """Where a slide layer's µm/px comes from, in words."""
    meta = layer.metadata.get("neuroseg", {}) if layer is not None else {}
    if meta.get("mpp_source") == "user":
        return "set by you"
    if meta.get("mpp_known"):
        return f"from the file ({meta.get('mpp_source')})"
    if meta:
        return "ASSUMED: the file does not state it; set the real value"
    return "ASSUMED: opened by napari's reader without a pixel size; set the real value"


class MppField(Container):
    """µm/px of the chosen slide layer: its value and origin; editing it rescales the layer.

    Parameters
    ----------
    label : str
        The field's name in the form.
    """

    def __init__(self, label: str = "µm/px") -> None:
        super().__init__(layout="horizontal", labels=False, label=label)
        self.value_box = FloatSpinBox(min=MIN_MPP, max=MAX_MPP, step=0.05, value=1.0)
        self.value_box.native.setDecimals(4)
        self.origin = Label(value="")
        self.extend([self.value_box, self.origin])
        self.margins = (0, 0, 0, 0)
        self._layer: Any = None
        self._updating = False
        self.value_box.changed.connect(self._on_value)

    @property
    def layer(self) -> Any:
        """The slide layer shown (None: none)."""
        return self._layer

    @layer.setter
    def layer(self, layer: Any) -> None:
        if self._layer is not None:
            self._layer.events.scale.disconnect(self.refresh)
        self._layer = layer
        if layer is not None:
            layer.events.scale.connect(self.refresh)
        self.refresh()

    def refresh(self, _event: Any = None) -> None:
        """Show the layer's current µm/px and where it comes from."""
        self._updating = True
        try:
            mpp = layer_mpp(self._layer)
            self.value_box.enabled = mpp is not None
            if mpp is not None:
                self.value_box.value = min(max(mpp, MIN_MPP), MAX_MPP)
            self.origin.value = mpp_origin(self._layer) if mpp is not None else ""
        finally:
            self._updating = False

    def _on_value(self, value: float) -> None:
        layer = self._layer
        if self._updating or layer is None or abs(float(value) - layer_mpp(layer)) < 1e-9:
            return
        old = layer.scale
        factor = float(value) / float(old[-1])
        scale = list(old)
        scale[-1], scale[-2] = float(value), float(old[-2]) * factor
        meta = dict(layer.metadata.get("neuroseg", {}))
        meta.update(mpp=[scale[-2], scale[-1]], mpp_source="user", mpp_known=True)
        layer.metadata = {**layer.metadata, "neuroseg": meta}
        layer.scale = scale  # refresh() follows through the scale event

    def close(self) -> None:
        """Stop following the layer."""
        self.layer = None
        super().close()
