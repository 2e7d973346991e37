"""Run a model over an opened image: the glue between readers, preprocessing, engine and models.

Used by the batch command (``python -m napari_neuroseg predict``) and by the live widgets.
"""

from napari_neuroseg.analysis.slide import SlidePlan, plan_slide, predict_slide
from napari_neuroseg.analysis.volume import (
    SliceClassification,
    classify_slices,
    segment_volume,
)

__all__ = [
    "SliceClassification",
    "SlidePlan",
    "classify_slices",
    "plan_slide",
    "predict_slide",
    "segment_volume",
]
