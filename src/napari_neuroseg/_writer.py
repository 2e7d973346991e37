"""npe2 writer contributions: labels and probability maps, written atomically."""

from __future__ import annotations

from typing import Any

from napari_neuroseg.io.nifti_writer import write_nifti_labels
from napari_neuroseg.io.writers import write_labels, write_probabilities


def _neuroseg(attributes: dict[str, Any]) -> dict[str, Any]:
    """The layer's ``metadata["neuroseg"]`` (empty for layers the plugin did not make)."""
    return dict((attributes.get("metadata") or {}).get("neuroseg") or {})


def _raster_options(attributes: dict[str, Any]) -> dict[str, Any]:
    """What the TIFF / PNG writers take from a layer: scale, unit, pyramid and name."""
    return {
        "scale": attributes.get("scale"),
        "unit": _neuroseg(attributes).get("unit"),
        "pyramid": bool(attributes.get("multiscale")),
        "metadata": {"name": attributes.get("name")},
    }


def write_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a labels layer (multiscale ones as a pyramidal OME-TIFF) and return the paths."""
    return write_labels(path, data, **_raster_options(attributes))


def write_image_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer holding probabilities in [0, 1] and return the paths."""
    return write_probabilities(path, data, **_raster_options(attributes))


def write_nifti_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an MRI or CT labels layer as NIfTI in its source volume's geometry.

    See :mod:`napari_neuroseg.io.nifti_writer`: labels over a NIfTI volume keep its affine,
    labels over a DICOM series get the series' patient geometry.
    """
    return write_nifti_labels(
        path,
        data,
        geometry=_neuroseg(attributes),
        scale=attributes.get("scale"),
        translate=attributes.get("translate"),
    )
