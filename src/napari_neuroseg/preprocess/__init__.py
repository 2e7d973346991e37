"""Preprocessing: stain normalisation, tissue masks, CT windows, brain masks and the CT model
input, MRI z-scores.

Pure numpy/scipy/scikit-image (torch only inside ``MacenkoNormalizer.transform_torch``); no
napari, Qt or magicgui.
"""

from napari_neuroseg.preprocess.ct import (
    WINDOW_PRESETS,
    brain_mask,
    brain_mask_volume,
    extract_brain,
    preprocess_ct_slice,
    slice_quality,
    window,
)
from napari_neuroseg.preprocess.ct_input import ct_model_input
from napari_neuroseg.preprocess.mri import zscore
from napari_neuroseg.preprocess.stain import MacenkoNormalizer
from napari_neuroseg.preprocess.tissue import (
    slide_tissue_mask,
    slide_tissue_mask_at,
    tile_filter_from_mask,
    tissue_fraction,
    tissue_mask,
)

__all__ = [
    "WINDOW_PRESETS",
    "MacenkoNormalizer",
    "brain_mask",
    "brain_mask_volume",
    "ct_model_input",
    "extract_brain",
    "preprocess_ct_slice",
    "slice_quality",
    "slide_tissue_mask",
    "slide_tissue_mask_at",
    "tile_filter_from_mask",
    "tissue_fraction",
    "tissue_mask",
    "window",
    "zscore",
]
