"""Plain-text summaries of opened images, for the Open widget and the command line."""

from __future__ import annotations

from napari_neuroseg.io._types import LazyImage

_KEYS = (
    ("vendor", "Vendor"),
    ("format", "Format"),
    ("backend", "Read through"),
    ("mpp_source", "MPP from"),
    ("objective_power", "Objective power"),
    ("manufacturer", "Manufacturer"),
    ("patient_id", "Patient"),
    ("series_description", "Series"),
    ("series_number", "Series number"),
    ("orientation_label", "Orientation"),
    ("tilt_deg", "Gantry tilt (deg)"),
    ("uniform_spacing", "Uniform spacing"),
    ("resampled", "Resampled"),
    ("slice_numbers", "Slice numbers"),
)


def _fmt(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def describe(image: LazyImage) -> str:
    """A short, human-readable account of ``image``: modality, size, levels, spacing, warnings.

    Parameters
    ----------
    image : LazyImage

    Returns
    -------
    str
        Several lines of ``label: value`` text.
    """
    lines = [
        f"Name: {image.name}",
        f"Modality: {image.modality} ({image.kind})",
        f"Source: {image.source}",
        f"Size: {' x '.join(str(s) for s in image.shape)} ({image.axes}), {image.levels[0].dtype}",
        f"Pixel size: {' x '.join(_fmt(s) for s in image.scale)} {image.unit}"
        f" ({image.spatial_axes})",
    ]
    if image.multiscale:
        sizes = ", ".join("x".join(str(s) for s in lvl.shape[:2]) for lvl in image.levels)
        lines.append(f"Levels: {len(image.levels)} ({sizes})")
    for key, label in _KEYS:
        if key in image.metadata and image.metadata[key] is not None:
            lines.append(f"{label}: {_fmt(image.metadata[key])}")
    lines.extend(f"Warning: {w}" for w in image.warnings)
    return "\n".join(lines)
