"""What an analysis of one slide region gives back: :class:`RegionResult` (an image or labels
on the model's working grid, placed on the slide) and :class:`NucleiResult` (instance labels with
count, density and nucleus types).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_neuroseg.engine import Region, TileCounts

__all__ = ["UNTYPED", "NucleiResult", "RegionResult", "nuclei_density"]

#: The name :attr:`NucleiResult.type_counts` gives nuclei without a nuclear type.
UNTYPED = "untyped"
_UM_PER_UNIT = {"um": 1.0, "µm": 1.0, "micron": 1.0, "micrometer": 1.0, "mm": 1000.0,
                "nm": 1e-3}


@dataclass
class RegionResult:
    """One model's result over one region, on the model's working grid.

    Attributes
    ----------
    data : numpy.ndarray
        ``(H, W)`` labels or ``(H, W, 3)`` RGB uint8.
    scale, translate : tuple of float
        napari geometry that overlays ``data`` on the slide (world units, usually µm).
    region : Region
        The level-0 pixels analysed (after capping).
    working_region : Region
        The same region on the working grid (``data`` covers it).
    mpp : float
        Working pixel size in the slide's unit.
    unit : str
        The slide's world unit.
    counts : TileCounts
        Tiles computed, served from the cache, skipped (no tissue) or cancelled.
    complete : bool
        False when the run was stopped before every tile was computed.
    capped : bool
        True when the requested region was larger than the size limit and was cut down
        around its centre.
    notes : list of str
        What was decided, for the user.
    preview : str
        Empty for the model's result; for a quick preview shown before it, what made it
        (e.g. :func:`~napari_neuroseg.analysis.nuclei_preview.preview_nuclei`).
    """

    data: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    region: Region
    working_region: Region
    mpp: float
    unit: str
    counts: TileCounts
    complete: bool = True
    capped: bool = False
    notes: list[str] = field(default_factory=list)
    preview: str = ""

    @property
    def area_mm2(self) -> float:
        """Area of the analysed region in mm² (from the working pixel size)."""
        h, w = self.working_region.shape
        side_mm = self.mpp * _UM_PER_UNIT.get(self.unit, 1.0) / 1000.0
        return float(h * w * side_mm * side_mm)


@dataclass
class NucleiResult(RegionResult):
    """:class:`RegionResult` with instance labels (0 background, 1..n nuclei).

    Attributes
    ----------
    types : dict of int to int
        ``{instance id: type id}`` (an index of ``type_names``); empty when the model has no
        type branch.
    type_names : tuple of str
        The model's type names, the background first; empty without a type branch.
    type_labels : numpy.ndarray or None
        ``(H, W)`` uint8: the type id of every pixel's nucleus (0 background); None without
        types.
    """

    types: dict[int, int] = field(default_factory=dict)
    type_names: tuple[str, ...] = ()
    type_labels: np.ndarray | None = None

    @property
    def count(self) -> int:
        """Number of nuclei (labels are consecutive, so the largest id)."""
        return int(self.data.max()) if self.data.size else 0

    @property
    def density(self) -> float:
        """Nuclei per mm² of the analysed region."""
        return nuclei_density(self.count, self.area_mm2)

    @property
    def typed(self) -> bool:
        """Whether the model gave types (its nuclei may still be none)."""
        return bool(self.type_names)

    @property
    def type_counts(self) -> dict[str, int]:
        """Nuclei per type name, every nuclear type listed (0 when none was found).

        Nuclei none of whose pixels voted for a nuclear type are listed last as
        :data:`UNTYPED` (only when there are some), so the counts add up to :attr:`count`.
        Empty without types.
        """
        if not self.typed:
            return {}
        found = np.bincount(np.fromiter(self.types.values(), int, len(self.types)),
                            minlength=len(self.type_names))
        counts = {name: int(n) for name, n in zip(self.type_names[1:], found[1:], strict=False)}
        if found[0]:
            counts[UNTYPED] = int(found[0])
        return counts

    @property
    def type_density(self) -> dict[str, float]:
        """Nuclei per mm² of the analysed region, per type name (as :attr:`type_counts`)."""
        return {name: nuclei_density(n, self.area_mm2) for name, n in self.type_counts.items()}


def nuclei_density(count: int, area_mm2: float) -> float:
    """Nuclei per mm²: ``count / area_mm2`` (0 for an empty area)."""
    return float(count) / area_mm2 if area_mm2 > 0 else 0.0
