"""A tile-sparse label store on disk: corrections of one slide at one working resolution.

A :class:`LabelStore` is a folder::

    STORE/
      labelstore.json   the header: shape, chunk, dtype, class map, source, level, µm/px,
                        napari scale/translate, pyramid level shapes, created (written once)
      regions.json      the committed regions, with times and ``corrected_by_person``
      labels.zarr/      a zarr group, one array per pyramid level ("0" finest)

Chunks nobody wrote are not stored and read as 0, so a 100k x 100k slide costs what was
annotated. The folder is created under a temporary name and renamed; zarr writes every chunk
file under a temporary name too, and ``regions.json`` is replaced atomically. A commit first
records itself as pending in ``regions.json``, then writes the chunks and the levels above
them, then marks itself committed; :meth:`LabelStore.open` rebuilds the pyramid over a
commit a crash interrupted (each chunk holds either its old or its new labels) and lists it
in :attr:`LabelStore.interrupted`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_neuroseg.annotate.palette import ClassMap
from napari_neuroseg.dataset.manifest import now_iso
from napari_neuroseg.engine import Region
from napari_neuroseg.engine.levels import pyramid_shapes
from napari_neuroseg.io._atomic import atomic_directory, atomic_path
from napari_neuroseg.io.downsample import downsample

__all__ = [
    "FORMAT",
    "CommittedRegion",
    "LabelStore",
]

FORMAT = "napari-neuroseg-labelstore"
FORMAT_VERSION = 1
HEADER, REGIONS, ARRAYS = "labelstore.json", "regions.json", "labels.zarr"
Seed = Callable[[Region], np.ndarray] | np.ndarray | Any


@dataclass(frozen=True)
class CommittedRegion:
    """A region written to the store (working pixels of level 0).

    Attributes
    ----------
    region : Region
    committed : str
        ISO 8601 UTC time of the last commit of this region.
    corrected_by_person : bool
        A person painted it (False for labels seeded from a model and committed unchanged).
    commits : int
        How often this exact region was committed.
    """

    region: Region
    committed: str
    corrected_by_person: bool = True
    commits: int = 1

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (``region`` as ``[y0, x0, y1, x1]``)."""
        return {"region": _box(self.region), "committed": self.committed,
                "corrected_by_person": self.corrected_by_person, "commits": self.commits}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommittedRegion:
        """Inverse of :meth:`to_json`."""
        return cls(Region(*(int(v) for v in data["region"])), str(data["committed"]),
                   bool(data.get("corrected_by_person", True)), int(data.get("commits", 1)))


def _box(region: Region) -> list[int]:
    return [region.y0, region.x0, region.y1, region.x1]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")


class LabelStore:
    """Labels of one slide on a working grid, on disk, committed region by region.

    Use :meth:`create`, :meth:`open` or :meth:`open_or_create`; the constructor takes an
    existing folder. Reads and writes share :attr:`lock` with the lazy levels napari shows.

    Attributes
    ----------
    directory : Path
    shape : (int, int)
        (height, width) of the working grid.
    chunk : int
    dtype : numpy.dtype
    class_map : ClassMap
    scale, translate : (float, float)
        napari geometry of working pixel (0, 0) in the slide's world units.
    level : int
        The slide pyramid level the grid was derived from.
    mpp : float or None
        Working pixel size (µm/px).
    source : dict
        ``{"path", "identity", "sha256"}`` of the slide (``sha256`` may be None).
    created : str
    level_shapes : list of (int, int)
        Pyramid level shapes; level 0 padded so each level is exactly half the one below.
    interrupted : list of Region
        Commits a crash interrupted (found and repaired on opening).
    max_label : int
        The largest label ever committed (new instance ids start above it).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            header = json.loads((self.directory / HEADER).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{self.directory}: not a label store ({err})") from None
        if header.get("format") != FORMAT:
            raise ValueError(f"{self.directory}: {HEADER} is not a {FORMAT} header")
        if int(header.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{self.directory}: label store version "
                             f"{header['format_version']} is newer than this napari-neuroseg "
                             "reads; update napari-neuroseg")
        self.header = header
        self.shape = (int(header["shape"][0]), int(header["shape"][1]))
        self.chunk = int(header["chunk"])
        self.dtype = np.dtype(header["dtype"])
        self.class_map = ClassMap.from_dict(header["class_map"])
        self.scale = (float(header["scale"][0]), float(header["scale"][1]))
        self.translate = (float(header["translate"][0]), float(header["translate"][1]))
        self.level = int(header.get("level", 0))
        self.mpp = header.get("mpp")
        self.source = dict(header.get("source") or {})
        self.created = str(header.get("created", ""))
        self.level_shapes = [(int(h), int(w)) for h, w in header["level_shapes"]]
        self.lock = threading.RLock()
        group = zarr.open_group(str(self.directory / ARRAYS), mode="r+")
        self._levels = [group[str(i)] for i in range(len(self.level_shapes))]
        self._regions, pending, self.max_label = self._load_regions()
        self.interrupted: list[Region] = []
        if pending is not None:
            self._update_levels(pending)
            self.interrupted.append(pending)
            self._save_regions(None)

    # -- creating and opening ---------------------------------------------------------------
    @classmethod
    def create(cls, directory: str | Path, shape: Sequence[int], class_map: ClassMap, *,
               chunk: int = 256, scale: Sequence[float] = (1.0, 1.0),
               translate: Sequence[float] = (0.0, 0.0), level: int = 0,
               mpp: float | None = None, source: dict[str, Any] | None = None,
               min_side: int = 512) -> LabelStore:
        """Make a new, empty store at ``directory`` (which must not exist yet).

        Parameters
        ----------
        directory : str or Path
            The store folder; its parent is created if needed.
        shape : (int, int)
            (height, width) of the working grid.
        class_map : ClassMap
            Classes and colours; its ``dtype`` is the store's.
        chunk : int
            Chunk edge of every level.
        scale, translate : (float, float)
            napari geometry of working pixel (0, 0) (e.g. ``SlidePlan.scale/translate``).
        level, mpp : int, float
            The slide level the grid comes from and its working µm/px.
        source : dict, optional
            ``{"path": ..., "identity": ..., "sha256": ...}`` of the slide.
        min_side : int
            Levels are halved until the longest side is at most ``max(min_side, chunk)``
            (at least two levels: :func:`~napari_neuroseg.engine.levels.pyramid_shapes`).
        """
        directory = Path(directory)
        if directory.exists():
            raise FileExistsError(f"{directory} exists already: open it instead")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"a label store needs a 2-D (height, width) shape, got {shape}")
        h, w = int(shape[0]), int(shape[1])
        level_shapes = pyramid_shapes((h, w), int(chunk), min_side)
        header = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "shape": [h, w],
            "chunk": int(chunk), "dtype": class_map.dtype, "class_map": class_map.to_dict(),
            "scale": [float(s) for s in scale[-2:]],
            "translate": [float(t) for t in translate[-2:]], "level": int(level),
            "mpp": None if mpp is None else float(mpp),
            "source": dict(source or {}), "created": now_iso(),
            "level_shapes": [list(s) for s in level_shapes],
        }
        directory.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(directory) as tmp:
            group = zarr.open_group(str(tmp / ARRAYS), mode="w")
            for i, (lh, lw) in enumerate(level_shapes):
                group.create_array(str(i), shape=(lh, lw), chunks=(min(chunk, lh), min(chunk, lw)),
                                   dtype=class_map.dtype, fill_value=0)
            _write_json(tmp / REGIONS, {"regions": [], "pending": None})
            _write_json(tmp / HEADER, header)
        return cls(directory)

    @classmethod
    def open(cls, directory: str | Path) -> LabelStore:
        """Reopen a store (after a restart: the same labels, regions and geometry)."""
        return cls(directory)

    @classmethod
    def open_or_create(cls, directory: str | Path, shape: Sequence[int], class_map: ClassMap,
                       **kwargs: Any) -> LabelStore:
        """Open the store at ``directory`` if there is one, else :meth:`create` it.

        Raises
        ------
        ValueError
            When the existing store has another grid shape or class map.
        """
        if not Path(directory, HEADER).is_file():
            return cls.create(directory, shape, class_map, **kwargs)
        store = cls(directory)
        if store.shape != (int(shape[0]), int(shape[1])) or \
                store.class_map.names != class_map.names:
            raise ValueError(f"{directory} holds a {store.shape} store with classes "
                             f"{list(store.class_map.names)}, not {tuple(shape)} with "
                             f"{list(class_map.names)}: choose another folder")
        return store

    # -- geometry ---------------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_shapes)

    def check_region(self, region: Region) -> Region:
        """``region`` if it lies on the grid and is not empty; ValueError otherwise."""
        h, w = self.shape
        if not (0 <= region.y0 < region.y1 <= h and 0 <= region.x0 < region.x1 <= w):
            raise ValueError(f"region {_box(region)} is not inside the {h} x {w} label grid")
        return region

    def region_translate(self, region: Region) -> tuple[float, float]:
        """napari ``translate`` of an array holding ``region`` (with :attr:`scale`)."""
        return (self.translate[0] + self.scale[0] * region.y0,
                self.translate[1] + self.scale[1] * region.x0)

    # -- reading ----------------------------------------------------------------------------
    def read(self, region: Region) -> np.ndarray:
        """The labels of ``region`` (0 where nothing was committed)."""
        self.check_region(region)
        with self.lock:
            return np.asarray(self._levels[0][region.slices])

    def coverage(self, region: Region) -> np.ndarray:
        """Boolean ``region``-shaped mask: True where a committed region covers the pixel."""
        self.check_region(region)
        out = np.zeros(region.shape, dtype=bool)
        for entry in self.regions():
            r = entry.region
            y0, x0 = max(r.y0, region.y0), max(r.x0, region.x0)
            y1, x1 = min(r.y1, region.y1), min(r.x1, region.x1)
            if y1 > y0 and x1 > x0:
                out[y0 - region.y0:y1 - region.y0, x0 - region.x0:x1 - region.x0] = True
        return out

    def read_seeded(self, region: Region, seed: Seed = None) -> np.ndarray:
        """The store's labels where committed, elsewhere ``seed``'s (e.g. a model's result).

        Parameters
        ----------
        region : Region
        seed : callable, array-like or None
            ``seed(region) -> (h, w) labels``, or an array on the same grid (a numpy or dask
            array: only ``region`` is read), or None (0 where nothing was committed).
        """
        labels = self.read(region)
        if seed is None:
            return labels
        covered = self.coverage(region)
        if covered.all():
            return labels
        values = seed(region) if callable(seed) else seed[region.slices]
        values = np.asarray(values.compute() if hasattr(values, "compute") else values)
        if values.shape != region.shape:
            raise ValueError(f"seed labels of shape {values.shape} do not fit region "
                             f"{_box(region)}")
        self._check_values(values)
        return np.where(covered, labels, values.astype(self.dtype))

    def regions(self) -> list[CommittedRegion]:
        """The committed regions, oldest first (what an export writes)."""
        with self.lock:
            return list(self._regions)

    def labels_levels(self) -> list[da.Array]:
        """The label pyramid as lazy dask arrays (finest first), for a multiscale layer."""
        return [da.from_array(a, chunks=a.chunks, lock=self.lock, asarray=True,
                              inline_array=True) for a in self._levels]

    @property
    def nbytes_stored(self) -> int:
        """Bytes of files in the store folder."""
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    # -- writing ----------------------------------------------------------------------------
    def commit(self, region: Region, labels: np.ndarray, *,
               corrected_by_person: bool = True) -> CommittedRegion:
        """Write ``labels`` over ``region``, update the pyramid, record the region.

        Parameters
        ----------
        region : Region
            Working pixels of level 0, inside the grid.
        labels : numpy.ndarray
            ``region``-shaped integer labels, ids within the class map (semantic stores).
        corrected_by_person : bool
            False for labels taken unchanged from a model.

        Returns
        -------
        CommittedRegion
        """
        self.check_region(region)
        labels = np.asarray(labels)
        if labels.shape != region.shape:
            raise ValueError(f"labels of shape {labels.shape} do not fit region "
                             f"{_box(region)} ({region.shape})")
        self._check_values(labels)
        with self.lock:
            self._save_regions(region)
            self._levels[0][region.slices] = labels.astype(self.dtype, copy=False)
            self._update_levels(region)
            entry = self._record(region, corrected_by_person)
            self.max_label = max(self.max_label, int(labels.max(initial=0)))
            self._save_regions(None)
        return entry

    def _check_values(self, labels: np.ndarray) -> None:
        if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        top = int(labels.max(initial=0))
        low = int(labels.min(initial=0))
        limit = (np.iinfo(self.dtype).max if self.class_map.kind == "instance"
                 else self.class_map.n_classes - 1)
        if low < 0 or top > limit:
            raise ValueError(f"label values {low}..{top} are outside the class map "
                             f"(0..{limit}: {', '.join(self.class_map.names)})"
                             if self.class_map.kind == "semantic"
                             else f"instance ids {low}..{top} do not fit {self.dtype}")

    def _update_levels(self, region: Region) -> None:
        """Recompute the levels above ``region`` (level-0 pixels): each pixel is the most
        common non-zero label of its 2 x 2 block, so thin strokes stay visible zoomed out."""
        below = region
        for level in range(1, self.n_levels):
            y0, x0 = below.y0 // 2 * 2, below.x0 // 2 * 2
            y1, x1 = -(-below.y1 // 2) * 2, -(-below.x1 // 2) * 2
            with self.lock:
                values = downsample(self._levels[level - 1][y0:y1, x0:x1], mode="labels")
                below = Region(y0 // 2, x0 // 2, y1 // 2, x1 // 2)
                self._levels[level][below.slices] = values

    def _record(self, region: Region, corrected_by_person: bool) -> CommittedRegion:
        for i, old in enumerate(self._regions):
            if old.region == region:
                entry = CommittedRegion(region, now_iso(),
                                        old.corrected_by_person or corrected_by_person,
                                        old.commits + 1)
                self._regions[i] = entry
                return entry
        entry = CommittedRegion(region, now_iso(), corrected_by_person)
        self._regions.append(entry)
        return entry

    def _load_regions(self) -> tuple[list[CommittedRegion], Region | None, int]:
        data = json.loads((self.directory / REGIONS).read_text(encoding="utf-8"))
        pending = data.get("pending")
        return ([CommittedRegion.from_json(r) for r in data.get("regions", [])],
                Region(*pending) if pending else None, int(data.get("max_label", 0)))

    def _save_regions(self, pending: Region | None) -> None:
        _write_json(self.directory / REGIONS, {
            "regions": [r.to_json() for r in self._regions],
            "pending": None if pending is None else _box(pending), "max_label": self.max_label})

    def __repr__(self) -> str:
        return (f"LabelStore({str(self.directory)!r}, shape={self.shape}, "
                f"classes={list(self.class_map.names)}, regions={len(self._regions)})")
