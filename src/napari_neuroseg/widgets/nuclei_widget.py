"""The Nuclei widget: nuclear instances, count and density of the region on screen.

HoVer-Net (or a checkpoint) over the visible region at the model's resolution, through
:class:`~napari_neuroseg.widgets._view_analysis.ViewAnalysisWidget`; the instance labels
replace the widget's result layer, aligned with the slide. When the model has a type branch,
a second layer shows each nucleus's type (:mod:`napari_neuroseg.widgets._nuclei_types`) and
the text gives the count and density per type. "Quick preview first" shows the classical
hematoxylin watershed of the same region (:func:`~napari_neuroseg.analysis.nuclei_preview.
preview_nuclei`) in the same layer while the model runs, labelled a preview.
"""

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Label

from napari_neuroseg.analysis.nuclei_preview import preview_nuclei
from napari_neuroseg.analysis.region import (
    NucleiResult,
    RegionResult,
    segment_nuclei,
)

if TYPE_CHECKING:
    import napari

from napari_neuroseg.io.layers import image_layers
from napari_neuroseg.widgets._nuclei_types import (
    remove_types_layer,
    show_types_layer,
    types_text,
)
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._view_analysis import ViewAnalysisWidget
from napari_neuroseg.widgets._workers import forget_removed_layers
from napari_neuroseg.widgets.stain_widget import StainWidget


class NucleiWidget(ViewAnalysisWidget):
    """Nuclear instance labels, count and density of the region on screen (HoVer-Net).

    Parameters
    ----------
    viewer : napari.Viewer
    """

    TASKS = ("instance_segmentation",)
    TITLE = "Nuclei"
    RUN_TEXT = "Find nuclei in the view"

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(viewer)
        self.count = Label(label="Nuclei", value="-")
        self.density = Label(label="Density", value="-")
        self.types = Label(label="Types", value="-")  # shown for models with types
        self.types_layer: Any = None
        self.insert(self.index(self.status), self.count)
        self.insert(self.index(self.status), self.density)
        self.insert(self.index(self.status), self.types)
        self.types.visible = False
        fit_panel(self)

    analyse = staticmethod(segment_nuclei)
    quick = staticmethod(preview_nuclei)

    def _slide_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """The slides, then each Stain result as "translated H&E of <slide>": HoVer-Net on
        the virtual H&E of an IHC slide (the CycleGAN + HoVer-Net recipe)."""
        translated = [(f"translated H&E of {meta.get('source') or layer.name}", layer)
                      for layer in image_layers(self._viewer.layers, ("slide",))
                      for meta in [layer.metadata.get("neuroseg", {})]
                      if meta.get("result_of") == StainWidget.TITLE]
        return [*super()._slide_choices(_widget), *translated]

    def _on_layers_changed(self, _event: Any = None) -> None:
        super()._on_layers_changed(_event)
        forget_removed_layers(self, self._viewer, "types_layer")

    def show_result(self, result: RegionResult) -> None:
        """Replace the instance labels layer (and the types layer); show the count, the
        density, and both per type when the model has types."""
        assert isinstance(result, NucleiResult)
        spec = self.loaded.plan.spec if self.loaded is not None else None
        name = f"{spec.name if spec else 'nuclei'} nuclei"
        features = nucleus_features(result, spec.classes[-1] if spec else "nucleus")
        metadata = self._result_metadata()
        metadata["neuroseg"] = {**metadata["neuroseg"], "preview": result.preview}
        layer = self.result_layer
        if layer is not None and layer in self._viewer.layers:
            layer.data = result.data
            for key, value in self._layer_kwargs(result).items():
                setattr(layer, key, value)
            layer.metadata = {**layer.metadata, **metadata}
            layer.features = features
        else:
            self.result_layer = self._viewer.add_labels(
                result.data, name=name, features=features, opacity=0.6,
                metadata=metadata, **self._layer_kwargs(result))
        tag = " (preview)" if result.preview else ""
        self.count.value = f"{result.count}{tag}"
        self.density.value = (f"{result.density:.0f} nuclei/mm² "
                              f"(in {result.area_mm2:.4g} mm²){tag}")
        h, w = result.working_region.shape
        if result.preview:
            self.status.value = (f"Preview ({result.preview}): {result.count} nuclei in "
                                 f"{h} x {w} px; the model is running ...")
            return  # types (if any) stay as they are until the model's result
        self.status.value = (f"{result.count} nuclei in {h} x {w} px at {result.mpp:.3g} "
                             f"µm/px; {self._notes(result)}")
        self._show_types(result, spec.name if spec else "nuclei")

    def _show_types(self, result: NucleiResult, model: str) -> None:
        if not result.typed:
            remove_types_layer(self._viewer, self.types_layer)
            self.types_layer = None
            self.types.visible = False
            return
        self.types_layer = show_types_layer(
            self._viewer, self.types_layer, result, f"{model} types",
            self._layer_kwargs(result), self._result_metadata())
        self.types.value = types_text(result) or "-"
        self.types.visible = True


def nucleus_features(result: NucleiResult, class_name: str = "nucleus") -> dict[str, Any]:
    """Per-label features for napari (status bar): index, class and area in µm², and the
    type name when the model has types."""
    ids = np.arange(result.count + 1)
    pixels = np.bincount(result.data.ravel(), minlength=len(ids))[: len(ids)]
    features: dict[str, Any] = {"index": ids, "class": ["background"] + [class_name] * result.count,
                                "area_um2": pixels * result.mpp**2}
    if result.typed:
        names = result.type_names
        features["type"] = [names[0]] + [names[result.types.get(i, 0)]
                                         for i in range(1, result.count + 1)]
    return features
