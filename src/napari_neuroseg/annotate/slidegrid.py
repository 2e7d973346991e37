"""Where a slide's label store lives and on which grid: the working grid a model sees, the
slide's identity (cheap, survives copies and renames), the default store folder, and
nearest-neighbour resampling of labels from another grid onto it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from napari_neuroseg.annotate.palette import ClassMap
from napari_neuroseg.dataset.manifest import safe_id
from napari_neuroseg.engine import Region, choose_level
from napari_neuroseg.io import LazyImage

__all__ = ["SlideGrid", "default_store_path", "resample_labels", "slide_grid", "slide_identity"]


class SlideGrid(NamedTuple):
    """The working grid of a slide at a pixel size: what a :class:`LabelStore` is made on."""

    shape: tuple[int, int]
    scale: tuple[float, float]
    translate: tuple[float, float]
    level: int
    mpp: float


def slide_grid(image: LazyImage, mpp: float | None = None) -> SlideGrid:
    """The grid a model working at ``mpp`` µm/px sees on ``image`` (as ``plan_slide`` picks it).

    Parameters
    ----------
    image : LazyImage
        A slide (its ``scale`` is level 0's µm/px).
    mpp : float, optional
        Working pixel size; level 0's when None.
    """
    base = float(image.scale[0])
    choice = choose_level([base * d for d in image.downsamples()], float(mpp or base))
    scale, translate = choice.geometry(tuple(image.translate or (0.0, 0.0))[-2:])
    shape = choice.working_array(image.levels[choice.level]).shape[:2]
    return SlideGrid((int(shape[0]), int(shape[1])), scale, translate, choice.level,
                     choice.working_mpp)


def slide_identity(source: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """A cheap identity of a slide file: SHA-256 of its size, first and last ``block`` bytes.

    Unlike the full SHA-256 (seconds per GB) it costs two reads, survives renaming and
    copying, and changes when the file's content does. A folder hashes its entries' names and
    sizes; anything else (a layer name) hashes the string.
    """
    path = Path(source)
    digest = hashlib.sha256()
    if path.is_file():
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(block))
            handle.seek(max(0, size - block))
            digest.update(handle.read(block))
    elif path.is_dir():
        for entry in sorted(path.iterdir()):
            digest.update(f"{entry.name}:{entry.stat().st_size};".encode())
    else:
        digest.update(str(source).encode())
    return digest.hexdigest()


def default_store_path(source: str | os.PathLike[str], class_map: ClassMap, mpp: float, *,
                       identity: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                       beside_data: bool = True) -> Path:
    """Where the store of a slide, a class map and a working µm/px goes by default.

    Beside the slide (``<slide>.neuroseg-labels/<classes>-<mpp>um-<key>``) when its folder is
    writable and ``beside_data``; otherwise in ``cache_dir`` (default
    ``$XDG_CACHE_HOME/napari-neuroseg/labels`` or ``~/.cache/...``), named by the slide's
    identity. ``key`` hashes the slide identity, the class names and ``mpp``, so another class
    map or resolution never reuses a store.
    """
    identity = identity or slide_identity(source)
    key = hashlib.sha256(json.dumps([identity, list(class_map.names), round(float(mpp), 6)])
                         .encode()).hexdigest()[:12]
    name = f"{safe_id(class_map.title or 'labels')}-{float(mpp):g}um-{key}"
    path = Path(source)
    if beside_data and path.exists() and os.access(path.parent, os.W_OK):
        return path.parent / f"{path.name}.neuroseg-labels" / name
    root = Path(cache_dir) if cache_dir is not None else (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "napari-neuroseg" / "labels")
    return root / f"{identity[:16]}-{name}"


def resample_labels(array: Any, scale: Sequence[float], translate: Sequence[float],
                    region: Region, grid_scale: Sequence[float],
                    grid_translate: Sequence[float]) -> np.ndarray:
    """Nearest-neighbour labels of ``array`` at the pixels of ``region`` of another grid.

    Reads only the part of ``array`` (numpy or dask, 2-D, napari geometry ``scale`` /
    ``translate``) under the region; pixels outside ``array`` are 0. Used to seed an edit
    region from a result layer at another resolution.
    """
    index = []
    for k, (start, stop) in enumerate(((region.y0, region.y1), (region.x0, region.x1))):
        centres = grid_translate[-2 + k] + grid_scale[-2 + k] * np.arange(start, stop)
        index.append(np.floor((centres - translate[-2 + k]) / scale[-2 + k] + 0.5)
                     .astype(np.int64))
    (iy, ix), (h, w) = index, array.shape[-2:]
    vy, vx = (iy >= 0) & (iy < h), (ix >= 0) & (ix < w)
    out = np.zeros(region.shape, dtype=array.dtype)
    if not vy.any() or not vx.any():
        return out
    y0, x0 = int(iy[vy].min()), int(ix[vx].min())
    part = array[y0:int(iy[vy].max()) + 1, x0:int(ix[vx].max()) + 1][iy[vy] - y0][:, ix[vx] - x0]
    out[np.ix_(vy, vx)] = np.asarray(part.compute() if hasattr(part, "compute") else part)
    return out
