"""One file write: TIFF / OME-TIFF pages or tiles, or a PNG, streamed and atomic.

:class:`WritePlan` holds where and how to write (format, axes, physical scale, description
metadata); :mod:`napari_neuroseg.io.writers` checks and converts the data before handing
it over.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask.array as da
import imagecodecs
import numpy as np
import tifffile

from ._atomic import atomic_path
from ._write_common import TILE, WriterError, halving_pyramid
from .mri import mm_per_unit

__all__ = ["WritePlan"]

TILE_ABOVE = 1024  #: planes with a side longer than this are tiled
_BAND_BYTES = 64 * 2**20  # rows of tiles computed together, at most about this many bytes
_BIGTIFF_BYTES = 2**32 - 2**28
_OME_UNITS = MappingProxyType(
    {1.0: "mm", 1e-3: "µm", 1e-6: "nm", 10.0: "cm", 1000.0: "m", 25.4: "in"}
)


class WritePlan:
    """Where and how to write: format, axes, physical scale and description metadata."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        axes: str,
        scale: Sequence[float] | None,
        unit: str | None,
        kind: str,
        metadata: dict[str, Any] | None,
        channel_names: list[str] | None,
    ) -> None:
        if fmt == "png" and axes != "yx":
            raise WriterError(path, f"PNG holds 2D masks only, not {axes!r}: use .tif or .ome.tif")
        if unit is not None and mm_per_unit(unit) is None:
            raise WriterError(path, f"unknown unit {unit!r} (use 'mm', 'um', 'nm', 'cm' or 'm')")
        self.path, self.fmt, self.axes, self.unit, self.kind = path, fmt, axes, unit, kind
        self.scale = _spatial_scale(path, axes, scale)
        self.metadata = json.loads(json.dumps(metadata or {}, default=str))
        self.channel_names = channel_names
        # Probabilities are noisy floats: zlib level 1 is ~2x faster there for ~same size.
        self._zlib_args = {"level": 1} if kind == "probabilities" else None

    def run(
        self,
        levels: list[da.Array],
        pyramid: bool,
        halve: Callable[[da.Array], da.Array],
        finish: Callable[[da.Array], da.Array],
    ) -> list[str]:
        """Build the pyramid if asked, convert to the stored type and write atomically."""
        if self.fmt == "png":
            if pyramid or len(levels) > 1:
                raise WriterError(self.path, "PNG stores one level: write a pyramid to .ome.tif")
            self._write_png(finish(levels[0]))
        else:
            if pyramid and len(levels) == 1:
                levels = halving_pyramid(levels[0], halve)
            self._write_tiff([finish(level) for level in levels])
        return [str(self.path)]

    def _write_png(self, array: da.Array) -> None:
        if self.scale and any(v != 1 for v in self.scale.values()):
            warnings.warn(
                f"{self.path}: PNG stores no pixel size; the scale is not written",
                UserWarning,
                stacklevel=4,
            )
        encoded = imagecodecs.png_encode(np.ascontiguousarray(array.compute()))
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(encoded)

    def _write_tiff(self, levels: list[da.Array]) -> None:
        tile = (TILE, TILE) if max(levels[0].shape[-2:]) > TILE_ABOVE else None
        bigtiff = sum(level.nbytes for level in levels) > _BIGTIFF_BYTES
        with (
            atomic_path(self.path) as tmp,
            tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=self.fmt == "ome") as tif,
        ):
            for i, level in enumerate(levels):
                factor = (
                    levels[0].shape[-2] / level.shape[-2],
                    levels[0].shape[-1] / level.shape[-1],
                )
                extra = (
                    {"subifds": len(levels) - 1, "metadata": self._description()}
                    if i == 0
                    else {"subfiletype": 1, "metadata": self._reduced_description()}
                )
                tif.write(
                    _tiff_chunks(level, tile),
                    shape=level.shape,
                    dtype=level.dtype,
                    photometric="minisblack",
                    compression="zlib",
                    compressionargs=self._zlib_args,
                    tile=tile,
                    **self._resolution(factor),
                    **extra,
                )

    def _resolution(self, factor: tuple[float, float]) -> dict[str, Any]:
        """TIFF resolution tags (pixels per cm, or per unitless ratio) for a level."""
        if self.scale is None:
            return {}
        size_y, size_x = self.scale["y"] * factor[0], self.scale["x"] * factor[1]
        if self.unit is None:
            return {"resolution": (1 / size_x, 1 / size_y), "resolutionunit": "NONE"}
        cm = mm_per_unit(self.unit) / 10
        return {
            "resolution": (1 / (size_x * cm), 1 / (size_y * cm)),
            "resolutionunit": "CENTIMETER",
        }

    def _reduced_description(self) -> dict[str, Any] | None:
        """Reduced levels: tifffile's shaped series needs a description on each SubIFD."""
        return {"axes": self.axes.upper()} if self.fmt == "tiff" else None

    def _description(self) -> dict[str, Any]:
        """tifffile metadata: JSON description (TIFF) or OME-XML attributes (OME-TIFF)."""
        facts = {"kind": self.kind, "metadata": self.metadata}
        if self.fmt == "tiff":
            z = self.scale.get("z") if self.scale else None
            out = {
                "axes": self.axes.upper(),
                **facts,
                "spacing": z,
                "unit": self.unit,
                "channel_names": self.channel_names,
            }
            return {k: v for k, v in out.items() if v is not None}
        out: dict[str, Any] = {"axes": self.axes.upper()}
        if isinstance(self.metadata.get("name"), str):
            out["Name"] = self.metadata["name"]
        if self.scale and self.unit is not None:
            symbol = _OME_UNITS.get(mm_per_unit(self.unit), "mm")
            factor = mm_per_unit(self.unit) / mm_per_unit(symbol)
            for axis in set(self.scale) & set("zyx"):
                out[f"PhysicalSize{axis.upper()}"] = self.scale[axis] * factor
                out[f"PhysicalSize{axis.upper()}Unit"] = symbol
        elif self.scale:
            facts["unitless_scale"] = self.scale
        if self.channel_names:
            out["Channel"] = {"Name": self.channel_names}
        out["Description"] = json.dumps(facts)
        return out


def _spatial_scale(path: Path, axes: str, scale: Sequence[float] | None) -> dict[str, float] | None:
    """Pixel size per spatial axis letter; accepts one value per axis including ``c``."""
    if scale is None:
        return None
    values = [float(v) for v in scale]
    spatial = axes.replace("c", "")
    if len(values) == len(axes) != len(spatial):
        values = [v for v, a in zip(values, axes, strict=True) if a != "c"]
    if len(values) != len(spatial) or not all(math.isfinite(v) and v > 0 for v in values):
        raise WriterError(path, f"scale {tuple(scale)} does not fit axes {axes!r}")
    return dict(zip(spatial, values, strict=True))


def _tiff_chunks(level: da.Array, tile: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Pages (untiled) or tiles in file order, computing a band of tile rows at a time."""
    height, width = level.shape[-2:]
    if tile is None:
        for index in np.ndindex(*level.shape[:-2]):
            yield np.asarray(level[index].compute())
        return
    row_bytes = tile[0] * width * level.dtype.itemsize
    chunk_rows = max(level.chunks[-2])
    band = tile[0] * max(1, min(math.ceil(chunk_rows / tile[0]), _BAND_BYTES // row_bytes))
    for index in np.ndindex(*level.shape[:-2]):
        plane = level[index]
        for y0 in range(0, height, band):
            rows = np.asarray(plane[y0 : y0 + band].compute())
            for ty in range(0, rows.shape[0], tile[0]):
                for x0 in range(0, width, tile[1]):
                    yield rows[ty : ty + tile[0], x0 : x0 + tile[1]]
