"""The Stain widget: the IHC -> H&E translated view of the region on screen.

An image-translation model (``ihc-to-he``, a CycleGAN generator, or a checkpoint) runs over
the visible region at its resolution in a worker; its output, brought from the spec's
normalisation range back to 0-255, replaces the widget's RGB image layer, aligned with the
slide. The region, model loading, "Follow the view" and cancellation are those of
:class:`~napari_neuroseg.widgets._view_analysis.ViewAnalysisWidget`.
"""

from typing import TYPE_CHECKING

from napari_neuroseg.analysis.region import RegionResult, translate_stain
from napari_neuroseg.widgets._view_analysis import ViewAnalysisWidget

if TYPE_CHECKING:
    import napari


class StainWidget(ViewAnalysisWidget):
    """Virtual H&E of the region on screen, as an RGB uint8 image layer.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    TASKS = ("image_translation",)
    TITLE = "Stain"
    RUN_TEXT = "Translate the view"

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(viewer)
        self.tissue.visible = False  # translation models run on every tile

    analyse = staticmethod(translate_stain)

    def show_result(self, result: RegionResult) -> None:
        """Replace the translated RGB layer."""
        spec = self.loaded.plan.spec if self.loaded is not None else None
        name = f"{spec.name if spec else 'stain'} view"
        metadata = self._result_metadata()
        slide = self.layer.value
        # the slide it translates: the Nuclei widget offers it as "translated H&E of <slide>"
        metadata["neuroseg"] = {**metadata["neuroseg"],
                                "source": slide.name if slide is not None else ""}
        layer = self.result_layer
        if layer is not None and layer in self._viewer.layers:
            layer.data = result.data
            for key, value in self._layer_kwargs(result).items():
                setattr(layer, key, value)
            layer.metadata = {**layer.metadata, **metadata}
        else:
            self.result_layer = self._viewer.add_image(
                result.data, name=name, rgb=True, metadata=metadata,
                **self._layer_kwargs(result))
        h, w = result.working_region.shape
        self.status.value = (f"Translated {h} x {w} px at {result.mpp:.3g} µm/px; "
                             f"{self._notes(result)}")
