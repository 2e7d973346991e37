"""The network input of a CT slice classifier: one function for training and inference.

:func:`ct_model_input` is what ``python -m training ct`` stores for every slice and what the
plugin (the CT widget, ``predict``, Grad-CAM, through
:func:`napari_neuroseg.analysis.volume.prepare_ct_slice`) feeds the network, so a model sees
in use exactly what it saw in training. Which pipeline a model needs is read from its spec
(the checkpoint's sidecar), ``spec.input.preprocessing``:

- **the CT metastasis recipe's order** (docs/training-recipes.md), :data:`CT_RECIPE_STEPS`:
  brain extraction, the 40/80 brain window, a z-score over the brain, padding to a square,
  resize. The result is the network input itself; such a spec's ``normalization`` is the
  identity (``{"kind": "range", "scale": 1.0}``) and its window is ``extra["ct_window"]``.
- **the earlier plugin path**, :data:`CT_LEGACY_STEPS` (any steps without ``"zscore"``: old
  sidecars and the bundled ``ct-metastasis`` spec): brain extraction (when listed), resize
  without padding, in HU; the model runner then applies the spec's ``ct_window``
  normalisation. Checkpoints trained that way keep working unchanged.

Pure numpy / scikit-image: the spec is only read (duck-typed), so no model code is imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.transform import resize

from napari_neuroseg.preprocess.ct import (
    WINDOW_PRESETS,
    Spacing,
    brain_mask,
    extract_brain,
    preprocess_ct_slice,
)

__all__ = [
    "CT_LEGACY_STEPS",
    "CT_RECIPE_NORMALIZATION",
    "CT_RECIPE_STEPS",
    "ct_model_input",
    "ct_window_of",
    "is_recipe_input",
]

#: ``spec.input.preprocessing`` of a model trained on the recipe's input (z-score included).
CT_RECIPE_STEPS = ("brain_extraction", "ct_window", "zscore", "pad_square", "resize")
#: The earlier steps: brain extraction then resize in HU; the runner applies the window.
CT_LEGACY_STEPS = ("brain_extraction", "ct_window")
#: ``spec.input.normalization`` of a recipe model: the input is final, the runner leaves it.
CT_RECIPE_NORMALIZATION = {"kind": "range", "scale": 1.0}


def is_recipe_input(spec: Any) -> bool:
    """Whether ``spec`` asks for the recipe's input (its preprocessing has ``"zscore"``)."""
    return "zscore" in tuple(spec.input.preprocessing)


def ct_window_of(spec: Any) -> tuple[float, float]:
    """The ``(center, width)`` CT window of ``spec``: ``extra["ct_window"]``, else a
    ``ct_window`` normalisation's, else the brain window 40/80."""
    given = (getattr(spec, "extra", None) or {}).get("ct_window")
    if given is not None:
        center, width = given["center"], given["width"]
        return float(center), float(width)
    norm = spec.input.normalization
    if norm.get("kind") == "ct_window":
        return float(norm["center"]), float(norm["width"])
    return WINDOW_PRESETS["brain"]


def ct_model_input(hu: np.ndarray, spec: Any, pixel_spacing: Spacing = 1.0,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """One slice prepared for ``spec``'s network, by the pipeline its sidecar records.

    Parameters
    ----------
    hu : numpy.ndarray
        ``(H, W)`` slice in HU.
    spec : ModelSpec
        The model's description: ``input.preprocessing`` chooses the pipeline (see the module
        docstring), ``input.patch_size`` the output size, :func:`ct_window_of` the window.
    pixel_spacing : float or (float, float), optional
        Pixel size in mm (the brain mask's radii and areas are physical).
    mask : numpy.ndarray, optional
        The slice's brain mask when already computed (training computes it once for the
        quality filter too); by default :func:`napari_neuroseg.preprocess.ct.brain_mask`.

    Returns
    -------
    numpy.ndarray
        float32 ``patch_size``: for the recipe's steps the final network input (z-scores);
        otherwise brain-only HU, which the runner windows.
    """
    slice_hu = np.asarray(hu, dtype=np.float32)
    steps = tuple(spec.input.preprocessing)
    size = tuple(int(v) for v in spec.input.patch_size)
    brain = "brain_extraction" in steps
    if brain and mask is None:
        mask = brain_mask(slice_hu, spacing=pixel_spacing)
    if "zscore" in steps:
        center, width = ct_window_of(spec)
        if not brain:
            mask = np.ones(slice_hu.shape, dtype=bool)
        return preprocess_ct_slice(slice_hu, size, spacing=pixel_spacing, center=center,
                                   width=width, mask=mask)
    if brain:
        slice_hu = extract_brain(slice_hu, spacing=pixel_spacing, mask=mask)
    if slice_hu.shape != size:
        slice_hu = resize(slice_hu, size, order=1, preserve_range=True, anti_aliasing=True)
    return slice_hu.astype(np.float32)
