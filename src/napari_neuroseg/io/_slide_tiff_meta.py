"""Slide metadata from TIFF tags: vendor/format, pixel size (MPP) and objective power."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import tifffile

from ._slide_common import plausible_mpp

#: Micrometres per ResolutionUnit (TIFF: 2 inch, 3 centimetre; DNG adds 4 mm and 5 um).
UM_PER_RESOLUTION_UNIT = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
#: Micrometres per OME length unit (PhysicalSizeXUnit); OME's default unit is the micrometre.
UM_PER_OME_UNIT = {
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "Å": 1e-4,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}
SVS_APPMAG = re.compile(r"\bAppMag\s*=\s*([0-9.eE+-]+)")
FORMAT_FLAGS = (
    ("is_svs", "aperio", "aperio-svs"),
    ("is_ndpi", "hamamatsu", "hamamatsu-ndpi"),
    ("is_scn", "leica", "leica-scn"),
    ("is_bif", "ventana", "ventana-bif"),
    ("is_philips", "philips", "philips-tiff"),
    ("is_ome", "ome", "ome-tiff"),
)


def slide_format(tif: tifffile.TiffFile) -> tuple[str, str]:
    """``(vendor, format)`` from tifffile's format flags, e.g. ``("aperio", "aperio-svs")``."""
    for flag, vendor, fmt in FORMAT_FLAGS:
        if getattr(tif, flag, False):
            return vendor, fmt
    return "generic-tiff", "generic-tiff"


def resolution_mpp(page: tifffile.TiffPage) -> tuple[tuple[float, float] | None, str | None]:
    """MPP ``(y, x)`` from XResolution/YResolution and ResolutionUnit, and a note if ignored.

    Returns ``(None, None)`` when there is no resolution or its unit is NONE, and
    ``(None, note)`` when the value is not a believable slide pixel size (such as 72 dpi).
    """
    tags = page.tags
    if 282 not in tags or 283 not in tags:
        return None, None
    unit = int(tags.valueof(296, default=2))
    if unit not in UM_PER_RESOLUTION_UNIT:
        return None, None
    try:
        per_unit_x = _rational(tags.valueof(282))
        per_unit_y = _rational(tags.valueof(283))
    except (TypeError, ValueError, ZeroDivisionError):
        return None, "the TIFF resolution tags could not be parsed and were ignored"
    if per_unit_x <= 0 or per_unit_y <= 0:
        return None, None
    um = UM_PER_RESOLUTION_UNIT[unit]
    mpp = (um / per_unit_y, um / per_unit_x)
    if not (plausible_mpp(mpp[0]) and plausible_mpp(mpp[1])):
        return None, (
            f"the TIFF resolution ({mpp[1]:.4g} x {mpp[0]:.4g} um/px) is not a plausible slide "
            "pixel size and was ignored"
        )
    return mpp, None


def ome_mpp(xml: str, image_index: int) -> tuple[tuple[float, float] | None, str | None]:
    """MPP ``(y, x)`` from the OME-XML ``Pixels`` of image ``image_index``, and a note if odd."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, "the OME-XML metadata could not be parsed"
    images = [el for el in root.iter() if _local(el.tag) == "Image"]
    if not images:
        return None, None
    image = images[min(image_index, len(images) - 1)]
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return None, None
    values = []
    for axis in ("Y", "X"):
        size = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if size is None:
            return None, None
        if unit not in UM_PER_OME_UNIT:
            return None, f"the OME PhysicalSize{axis} unit {unit!r} is not known and was ignored"
        values.append(float(size) * UM_PER_OME_UNIT[unit])
    if not all(plausible_mpp(v) for v in values):
        return None, f"the OME physical pixel size {values} um is not plausible and was ignored"
    return (values[0], values[1]), None


def objective_power(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    """Objective magnification when the file states it (SVS AppMag, NDPI, OME), else None."""
    try:
        if tif.is_svs:
            match = SVS_APPMAG.search(page.description or "")
            return float(match.group(1)) if match else None
        if tif.is_ndpi:
            value = (page.ndpi_tags or {}).get("Magnification")
            return float(value) if value else None
        if tif.is_ome:
            root = ET.fromstring(tif.ome_metadata or "")
            for el in root.iter():
                if _local(el.tag) == "Objective" and el.get("NominalMagnification"):
                    return float(el.get("NominalMagnification"))
    except (ValueError, TypeError, ET.ParseError):
        return None
    return None


def _rational(value: object) -> float:
    if isinstance(value, tuple):
        numerator, denominator = value
        return float(numerator) / float(denominator)
    return float(value)  # type: ignore[arg-type]


def _local(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]
