"""The lazy image record that every reader returns.

A reader never returns pixels: it returns :class:`LazyImage` records whose ``levels`` are
dask arrays (one per pyramid level for slides, a single level for CT and MRI volumes).
:mod:`napari_neuroseg.io.layers` turns them into napari layer data with a physical scale,
so layers of different resolution line up in world coordinates, and layers back into records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import dask.array as da

LayerKind = Literal["image", "labels"]


class ReaderError(ValueError):
    """A file or folder that a reader cannot read.

    The message always names the file and says what is wrong with it.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class LazyImage:
    """A lazily read image with the metadata needed to display and analyse it.

    Parameters
    ----------
    levels : list of dask.array.Array
        Full resolution first. Slides have several levels (each about half the size of the
        one before); volumes have one.
    axes : str
        Axis letters of every level, e.g. ``"yxc"`` (RGB slide), ``"zyx"`` (CT volume),
        ``"zyxc"`` (multi-channel MRI stack).
    scale : tuple of float
        Physical size of a level-0 pixel along each *spatial* axis (not ``c``), in ``unit``.
    unit : str
        ``"um"`` for slides, ``"mm"`` for CT and MRI.
    name : str
        Layer name shown in napari.
    modality : str
        ``"slide"``, ``"CT"``, ``"MR"`` or ``"labels"``.
    source : str
        The file or folder it was read from.
    kind : {"image", "labels"}
        Which napari layer type shows it.
    translate : tuple of float, optional
        Physical offset of the level-0 origin along each spatial axis.
    metadata : dict
        Reader-specific facts (vendor, levels, spacing, orientation, tilt, ...). JSON-friendly.
    warnings : list of str
        Problems the user should see (missing MPP, gantry tilt, skipped slices, ...).
    display : dict
        Extra napari layer keyword arguments (``contrast_limits``, ``colormap``, ``rgb``,
        ``channel_axis``, ``visible``, ...).
    """

    levels: list[da.Array]
    axes: str
    scale: tuple[float, ...]
    unit: str
    name: str
    modality: str
    source: str
    kind: LayerKind = "image"
    translate: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    display: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a LazyImage needs at least one level")
        ndim = self.levels[0].ndim
        if len(self.axes) != ndim:
            raise ValueError(f"axes {self.axes!r} do not match a {ndim}-d array")
        n_spatial = len(self.spatial_axes)
        if len(self.scale) != n_spatial:
            raise ValueError(f"scale {self.scale} needs {n_spatial} values ({self.spatial_axes})")

    @property
    def spatial_axes(self) -> str:
        """The axis letters without the channel axis ``c``."""
        return self.axes.replace("c", "")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full-resolution level."""
        return tuple(self.levels[0].shape)

    @property
    def multiscale(self) -> bool:
        """Whether there is more than one level."""
        return len(self.levels) > 1

    def downsamples(self) -> list[float]:
        """Downsample factor of every level relative to level 0 (along the first spatial axis)."""
        i = self.axes.index(self.spatial_axes[-2])
        base = self.levels[0].shape[i]
        return [base / level.shape[i] for level in self.levels]
