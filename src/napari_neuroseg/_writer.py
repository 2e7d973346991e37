"""npe2 writer contributions: labels and probability maps, written atomically."""

from __future__ import annotations

from typing import Any

from napari_neuroseg.io.writers import write_labels, write_probabilities


def _unit(attributes: dict[str, Any]) -> str | None:
    meta = attributes.get("metadata") or {}
    return (meta.get("neuroseg") or {}).get("unit")


def write_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a labels layer (multiscale ones as a pyramidal OME-TIFF) and return the paths."""
    return write_labels(
        path,
        data,
        scale=attributes.get("scale"),
        unit=_unit(attributes),
        pyramid=bool(attributes.get("multiscale")),
        metadata={"name": attributes.get("name")},
    )


def write_image_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer holding probabilities in [0, 1] and return the paths."""
    return write_probabilities(
        path,
        data,
        scale=attributes.get("scale"),
        unit=_unit(attributes),
        pyramid=bool(attributes.get("multiscale")),
        metadata={"name": attributes.get("name")},
    )
