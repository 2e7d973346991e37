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


def decode_slice(header: SliceHeader, dtype: np.dtype, fill: float) -> np.ndarray:
    """Decode one slice and apply its rescale; never raises.

    A slice that cannot be decoded (damaged file, missing codec, wrong size) is returned
    filled with ``fill`` and a :class:`DicomWarning` names the file.
    """
    try:
        stored = pixel_array(header.path, index=header.frame)
        if stored.shape != (header.rows, header.cols):
            raise ValueError(f"decoded shape {stored.shape} instead of "
                             f"{(header.rows, header.cols)}")
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


def _display(series: DicomSeries) -> dict[str, Any]:
    if series.modality == "CT":
        return dict(CT_DISPLAY)
    window = series.slices[0].window
    if window is None:
        return {"colormap": "gray"}
    centre, width = window
    return {"contrast_limits": (centre - width / 2, centre + width / 2), "colormap": "gray"}


def _metadata(series: DicomSeries, dtype: np.dtype) -> dict[str, Any]:
    first = series.slices[0]
    geometry = series.geometry
    syntax = UID(first.transfer_syntax) if first.transfer_syntax else None
    meta: dict[str, Any] = {
        "series_uid": series.uid,
        "series_description": series.description,
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
        "window_center": first.window[0] if first.window else None,
        "window_width": first.window[1] if first.window else None,
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
    """Build the :class:`LazyImage` of one series (stored or resampled); reads no pixels.

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
        display=_display(series),
    )
