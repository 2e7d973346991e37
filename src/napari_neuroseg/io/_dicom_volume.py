"""Turn a :class:`DicomSeries` into a lazy volume: one dask chunk per slice, decoded on demand."""

from __future__ import annotations

import math
import struct
import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from napari_neuroseg.io._dicom_headers import SliceHeader
from napari_neuroseg.io._dicom_series import DicomSeries, geometry_warnings, orientation_text
from napari_neuroseg.io._geometry import ResamplePlan, blend_slices, plan_resample
from napari_neuroseg.io._types import LazyImage

CT_AIR_HU = -1024.0
WINDOW_PRESETS = {"brain": (40.0, 80.0), "subdural": (75.0, 215.0), "bone": (600.0, 2800.0)}
CT_DISPLAY = {"contrast_limits": (0.0, 80.0), "colormap": "gray"}
INT16 = np.iinfo(np.int16)
WINDOW_PERCENTILES = (0.5, 99.5)
WINDOW_SAMPLE_SLICES = 5
DECODE_ERRORS = (
    InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, IndexError,
    AttributeError, RuntimeError, NotImplementedError, struct.error,
)


class DicomWarning(UserWarning):
    """A problem with a DICOM series that the user should know about."""


def _value_range(header: SliceHeader) -> tuple[float, float]:
    bits = max(1, min(header.bits_stored, 32))
    low, high = ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if header.signed else (0, 2**bits - 1))
    ends = sorted((low * header.slope + header.intercept, high * header.slope + header.intercept))
    return ends[0], ends[1]


def volume_dtype(slices: list[SliceHeader]) -> np.dtype:
    """int16 when every slope and intercept is integral and every value fits, else float32."""
    for header in slices:
        integral = float(header.slope).is_integer() and float(header.intercept).is_integer()
        low, high = _value_range(header)
        if not integral or low < INT16.min or high > INT16.max:
            return np.dtype(np.float32)
    return np.dtype(np.int16)


def fill_value(series: DicomSeries, dtype: np.dtype) -> float:
    """Value for missing pixels: -1024 HU for CT, else 0 (or the lowest storable value)."""
    if series.modality == "CT":
        value = CT_AIR_HU
    else:
        value = max(0.0, min(_value_range(s)[0] for s in series.slices))
    if dtype == np.int16:
        value = float(np.clip(value, INT16.min, INT16.max))
    return value


def _rescale(stored: np.ndarray, header: SliceHeader, dtype: np.dtype) -> np.ndarray:
    if dtype == np.int16:
        values = stored.astype(np.int32) * int(header.slope) + int(header.intercept)
        return np.clip(values, INT16.min, INT16.max).astype(np.int16)
    return (stored.astype(np.float64) * header.slope + header.intercept).astype(np.float32)


def _decode_stored(header: SliceHeader) -> np.ndarray:
    """The stored values of one slice; raises one of ``DECODE_ERRORS`` when it cannot."""
    stored = pixel_array(header.path, index=header.frame)
    if stored.shape != (header.rows, header.cols):
        raise ValueError(f"decoded shape {stored.shape} instead of {(header.rows, header.cols)}")
    return stored


def decode_slice(header: SliceHeader, dtype: np.dtype, fill: float) -> np.ndarray:
    """Decode one slice and apply its rescale; never raises.

    A slice that cannot be decoded (damaged file, missing codec, wrong size) is returned
    filled with ``fill`` and a :class:`DicomWarning` names the file.
    """
    try:
        stored = _decode_stored(header)
    except DECODE_ERRORS as exc:
        warnings.warn(
            f"{header.path}: could not decode {header.label} ({type(exc).__name__}: {exc}); "
            f"the slice is filled with {fill:g}",
            DicomWarning,
            stacklevel=2,
        )
        return np.full((header.rows, header.cols), fill, dtype=dtype)
    return _rescale(stored, header, dtype)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.int16:
        return np.clip(np.rint(values), INT16.min, INT16.max).astype(np.int16)
    return values.astype(dtype, copy=False)


def _resampled_slice(
    plan: ResamplePlan, index: int, sources: list[np.ndarray], fill: float, dtype: np.dtype
) -> np.ndarray:
    return _cast(blend_slices(plan, index, sources, fill), dtype)


def stored_volume(series: DicomSeries, dtype: np.dtype, fill: float) -> da.Array:
    """The slices as stored, in position order: a ``(z, y, x)`` dask array, one chunk per slice."""
    rows, cols = series.shape[1:]
    parts = [
        da.from_delayed(
            dask.delayed(decode_slice, pure=True)(header, dtype, fill), (rows, cols), dtype=dtype
        )
        for header in series.slices
    ]
    return da.stack(parts)


def resampled_volume(series: DicomSeries, plan: ResamplePlan, dtype: np.dtype, fill: float
                     ) -> da.Array:
    """The series on the uniform, tilt-corrected grid of ``plan`` (lazy, one chunk per slice)."""
    decoded = [dask.delayed(decode_slice, pure=True)(h, dtype, fill) for h in series.slices]
    plan_node = dask.delayed(plan, traverse=False)
    parts = []
    for index, blend in enumerate(plan.blends):
        sources = [decoded[k] for k in blend.sources]
        node = dask.delayed(_resampled_slice, pure=True)(plan_node, index, sources, fill, dtype)
        parts.append(da.from_delayed(node, plan.shape, dtype=dtype))
    return da.stack(parts)


def header_window(series: DicomSeries) -> tuple[float, float] | None:
    """The series' window ``(centre, width)`` from its headers, or None when they give none.

    The median centre and the median width over every slice that carries a window, so that
    the few slices at the edge of a stack (whose scanner window fits their near-empty
    content) do not decide the display of the whole series.
    """
    windows = [s.window for s in series.slices if s.window is not None]
    if not windows:
        return None
    centres, widths = np.array(windows, dtype=np.float64).T
    return float(np.median(centres)), float(np.median(widths))


def _headers_agree(series: DicomSeries, window: tuple[float, float]) -> bool:
    """At least half the slices carry a window and the middle half of the centres lie
    within one (median) width of each other."""
    centres = [s.window[0] for s in series.slices if s.window is not None]
    if 2 * len(centres) < len(series.slices):
        return False
    low, high = np.percentile(centres, [25, 75])
    return bool(high - low <= window[1])


def _sampled_limits(series: DicomSeries, dtype: np.dtype) -> tuple[tuple[float, float] | None, int]:
    """The ``WINDOW_PERCENTILES`` of up to ``WINDOW_SAMPLE_SLICES`` evenly spaced slices,
    and the number of slices they come from.

    Slices that cannot be decoded are left out (their warning comes when they are shown).
    """
    count = len(series.slices)
    picks = sorted({(k + 1) * count // (WINDOW_SAMPLE_SLICES + 1)
                    for k in range(WINDOW_SAMPLE_SLICES)})
    values = []
    for index in picks:
        header = series.slices[min(index, count - 1)]
        try:
            values.append(_rescale(_decode_stored(header), header, dtype).ravel())
        except DECODE_ERRORS:
            continue
    if not values:
        return None, 0
    low, high = np.percentile(np.concatenate(values), WINDOW_PERCENTILES)
    return ((float(low), float(high)) if high > low else None), len(values)


def display_window(series: DicomSeries, dtype: np.dtype) -> tuple[tuple[float, float] | None, str]:
    """Contrast limits for a non-CT series and a sentence saying where they come from.

    The rule:

    1. When at least half the slices carry a window (WindowCenter/WindowWidth) and the middle
       half of their centres lie within one width of each other, use the median centre and
       median width (:func:`header_window`); reads no pixels. A first slice's window can be
       far off: the first slice of a sagittal MPRAGE is near-empty and its header says 43/121,
       while the median over the series, 332/734, shows the brain unsaturated.
    2. Otherwise (no windows, too few, or headers that disagree badly) decode up to
       ``WINDOW_SAMPLE_SLICES`` evenly spaced slices and use the 0.5th and 99.5th percentiles
       of their values.
    3. When neither gives a range, return None: napari chooses the limits.

    Parameters
    ----------
    series : DicomSeries
        A scanned series.
    dtype : numpy.dtype
        The volume's dtype (the rescaled values are sampled in it).

    Returns
    -------
    limits : (float, float) or None
        ``(low, high)`` contrast limits.
    source : str
        How they were chosen, for the layer's metadata.
    """
    window = header_window(series)
    if window is not None and _headers_agree(series, window):
        centre, width = window
        n_windows = sum(s.window is not None for s in series.slices)
        return ((centre - width / 2, centre + width / 2),
                f"median window {centre:g}/{width:g} of {n_windows} slice header(s)")
    limits, n_sampled = _sampled_limits(series, dtype)
    if limits is None:
        return None, "napari's default (no header window, no sampled value range)"
    low, high = WINDOW_PERCENTILES
    reason = "no header window" if window is None else "header windows disagree"
    return limits, f"{low:g}-{high:g} percentiles of {n_sampled} slice(s) ({reason})"


def _display(series: DicomSeries, dtype: np.dtype) -> tuple[dict[str, Any], str]:
    if series.modality == "CT":
        return dict(CT_DISPLAY), "CT brain window"
    limits, source = display_window(series, dtype)
    if limits is None:
        return {"colormap": "gray"}, source
    return {"contrast_limits": limits, "colormap": "gray"}, source


def _metadata(series: DicomSeries, dtype: np.dtype) -> dict[str, Any]:
    first = series.slices[0]
    window = header_window(series)
    geometry = series.geometry
    syntax = UID(first.transfer_syntax) if first.transfer_syntax else None
    meta: dict[str, Any] = {
        "series_uid": series.uid,
        "series_description": series.description or None,
        "series_number": series.number,
        "modality": series.modality,
        "patient_id": first.patient_id,
        "study_date": first.study_date,
        "manufacturer": first.manufacturer,
        "n_slices": series.shape[0],
        "rows": series.shape[1],
        "columns": series.shape[2],
        "orientation": list(series.orientation),
        "orientation_label": orientation_text(series),
        "normal": list(geometry.normal),
        "pixel_spacing_mm": [series.spacing[1], series.spacing[2]],
        "slice_thickness_mm": first.slice_thickness,
        "slice_positions_mm": list(geometry.positions_mm),
        "slice_spacings_mm": geometry.spacings_mm,
        "mean_spacing_mm": series.spacing[0],
        "median_spacing_mm": geometry.median_spacing(default=series.spacing[0]),
        "uniform_spacing": geometry.uniform,
        "tilt_deg": geometry.tilt_deg,
        "gantry_detector_tilt_deg": series.gantry_tilt_deg,
        "skipped_files": list(series.skipped),
        "transfer_syntax": str(syntax.name if syntax is not None else ""),
        "transfer_syntax_uid": first.transfer_syntax,
        "window_center": window[0] if window else None,
        "window_width": window[1] if window else None,
        "rescale": {"slope": first.slope, "intercept": first.intercept},
        "dtype": str(dtype),
        "files": [str(path) for path in series.files],
        "frames": [s.frame for s in series.slices] if first.frame is not None else None,
        "resampled": None,
        "translate_frame": "slice frame (normal, column direction, row direction)",
    }
    if series.modality == "CT":
        meta["window_presets"] = dict(WINDOW_PRESETS)
    return meta


def series_to_image(
    series: DicomSeries, *, resample: bool = False, spacing: float | None = None
) -> LazyImage:
    """Build the :class:`LazyImage` of one series (stored or resampled).

    Reads no pixels, except a few slices of a non-CT series whose headers give no usable
    display window (see :func:`display_window`).

    Parameters
    ----------
    series : DicomSeries
        A scanned series.
    resample : bool
        Resample to a uniform, tilt-corrected grid along the slice normal.
    spacing : float, optional
        Output slice gap in mm when resampling; default the median source gap.

    Returns
    -------
    LazyImage
    """
    dtype = volume_dtype(series.slices)
    fill = fill_value(series, dtype)
    metadata = _metadata(series, dtype)
    metadata["fill_value"] = fill
    display, metadata["display_window"] = _display(series, dtype)
    dz, dy, dx = series.spacing
    if resample:
        plan = plan_resample(series.geometry, (dy, dx), series.shape[1:], spacing)
        volume = resampled_volume(series, plan, dtype, fill)
        scale, translate = (plan.spacing_mm, dy, dx), plan.origin_mm
        metadata["resampled"] = {
            "spacing_mm": plan.spacing_mm,
            "n_slices": len(plan.blends),
            "shape": list(volume.shape),
            "tilt_corrected": True,
        }
    else:
        volume = stored_volume(series, dtype, fill)
        scale, translate = (dz, dy, dx), series.geometry.origin_mm
    if not all(math.isfinite(v) and v > 0 for v in scale):
        scale = tuple(v if math.isfinite(v) and v > 0 else 1.0 for v in scale)
    return LazyImage(
        levels=[volume],
        axes="zyx",
        scale=tuple(float(v) for v in scale),
        unit="mm",
        name=series.name,
        modality=series.modality or "MR",
        source=series.source,
        translate=tuple(float(v) for v in translate),
        metadata=metadata,
        warnings=series.notes + geometry_warnings(series, resampled=resample),
        display=display,
    )
