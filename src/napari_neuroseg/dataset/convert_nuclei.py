"""Convert a folder of tiles with nuclei annotations to a dataset (``nuclei`` / ``nuclei-tiles``).

Annotations are matched by name in ``annotations_folder``: for ``X.png`` the first of
``X_data.xml``, ``X.xml``, ``X.png``/``X.tif`` (a label image) and ``X_mask.png``. XML files hold
one ``<Shape Type="(Smooth)Polygon">`` per nucleus with ``<Data><Points><Point X=.. Y=../>``
(pixel coordinates, UTF-8 with or without a byte-order mark) or a ``<Shape Type="Oval">``
with ``<Data><Extent X Y Width Height/>`` (an ellipse in that box); each shape is filled
(:func:`skimage.draw.polygon`) with its own instance id, later shapes over earlier ones.
Label images are either integer instance labels (2-D, ids > 0; a 0/1 or 0/255 image becomes
connected components) or colour coded (RGB: black is background, pure green ``(0, 255, 0)`` is
a boundary colour and is background too, every 4-connected region of one other colour is a
nucleus).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np
import skimage.io
from skimage.draw import polygon as fill_polygon
from skimage.measure import label as connected

from .layout import Dataset
from .manifest import DatasetError
from .tasks import NUCLEI_CLASSES, TILE_CLASSES
from .writer import DatasetWriter

#: A tile is NUCLEI when at least one nucleus has at least this fraction of its area inside.
INSIDE_FRACTION = 0.5
_TCGA = re.compile(r"(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})", re.IGNORECASE)
_IMAGE_EXT = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_BOUNDARY = (0, 255, 0)


def xml_polygons(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The polygons of an annotation XML as ``(n, 2)`` arrays of ``(x, y)`` pixels.

    Raises
    ------
    DatasetError
        If the file is not well-formed XML.
    """
    try:
        root = ET.fromstring(Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{path}: unreadable annotation XML ({exc})") from exc
    out = []
    for shape in root.iter("Shape"):
        kind = shape.get("Type", "").lower()
        if kind == "oval":
            points = _oval_points(shape)
        elif kind in ("smoothpolygon", "polygon"):
            points = [(float(p.get("X", "nan")), float(p.get("Y", "nan")))
                      for p in shape.iter("Point")]
        else:
            continue
        if len(points) >= 3 and np.all(np.isfinite(points)):
            out.append(np.asarray(points))
    return out


def _oval_points(shape: ET.Element, n: int = 32) -> list[tuple[float, float]]:
    """An ``<Shape Type="Oval">``'s ``<Extent X Y Width Height>`` (rotated by the ``<Data
    Rotation>`` degrees about its centre) as ``n`` polygon points; [] if it has none."""
    data, extent = shape.find("Data"), shape.find("Data/Extent")
    if data is None or extent is None:
        return []
    x, y, w, h = (float(extent.get(k, "nan")) for k in ("X", "Y", "Width", "Height"))
    angle = np.deg2rad(float(data.get("Rotation", "0") or 0))
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    dx, dy = w / 2 * np.cos(t), h / 2 * np.sin(t)
    cx, cy = x + w / 2, y + h / 2
    xs = cx + dx * np.cos(angle) - dy * np.sin(angle)
    ys = cy + dx * np.sin(angle) + dy * np.cos(angle)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def rasterise(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill each polygon with its own id (1, 2, ...; later over earlier) in a uint32 image."""
    labels = np.zeros(shape, np.uint32)
    for k, points in enumerate(polygons, start=1):
        rr, cc = fill_polygon(points[:, 1], points[:, 0], shape=shape)
        labels[rr, cc] = k
    return labels


def label_image_instances(image: np.ndarray) -> np.ndarray:
    """Instance ids (uint32, 0 background) from an instance or colour-coded label image."""
    if image.ndim == 3:
        rgb = image[..., :3].astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        boundary = (_BOUNDARY[0] << 16) | (_BOUNDARY[1] << 8) | _BOUNDARY[2]
        code[code == boundary] = 0
        out = np.zeros(code.shape, np.uint32)
        for colour in np.unique(code[code > 0]):
            regions = connected(code == colour, connectivity=1)
            out[regions > 0] = regions[regions > 0] + out.max()
        return out
    if image.ndim != 2:
        raise DatasetError(f"label image of shape {image.shape} is neither 2-D nor RGB")
    if len(np.unique(image)) <= 2:
        return connected(image > 0, connectivity=1).astype(np.uint32)
    return image.astype(np.uint32)


def _find_annotation(image: Path, folder: Path) -> Path | None:
    stem = image.stem
    for name in (f"{stem}_data.xml", f"{stem}.xml", f"{stem}.png", f"{stem}.tif",
                 f"{stem}_mask.png", f"{stem}_mask.tif"):
        candidate = folder / name
        if candidate.is_file() and candidate.resolve() != image.resolve():
            return candidate
    return None


def read_instances(annotation: Path, shape: tuple[int, int]) -> np.ndarray:
    """Instance labels of one tile from its XML or label image, checked against ``shape``."""
    if annotation.suffix.lower() == ".xml":
        return rasterise(xml_polygons(annotation), shape)
    labels = label_image_instances(read_image_file(annotation))
    if labels.shape != shape:
        raise DatasetError(f"{annotation}: label image {labels.shape} differs from its tile "
                           f"{shape}")
    return labels


def read_image_file(path: Path) -> np.ndarray:
    """Decode an image or label file; :class:`DatasetError` naming the file if that fails."""
    try:
        return np.asarray(skimage.io.imread(path))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from exc


def read_rgb(path: Path) -> np.ndarray:
    """An RGB tile (alpha dropped); :class:`DatasetError` if it is not RGB(A)."""
    image = read_image_file(path)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DatasetError(f"{path}: an H&E tile must be RGB, found shape {image.shape}")
    return image[..., :3]


def image_tiles(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a folder, sorted; :class:`DatasetError` if there are none."""
    path = Path(folder)
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_EXT) \
        if path.is_dir() else []
    if not images:
        raise DatasetError(f"{folder}: no image tiles ({', '.join(_IMAGE_EXT)})")
    return images


def patient_of(path: Path) -> str | None:
    """The TCGA patient (``TCGA-DB-5270``) in a file name, else None."""
    return _identity(path)[0]


def tile_has_nucleus(labels: np.ndarray, tile: tuple[slice, slice],
                     areas: np.ndarray, fraction: float = INSIDE_FRACTION) -> tuple[bool, int]:
    """Whether a tile holds a nucleus with >= ``fraction`` of its area inside; and how many.

    ``areas[k]`` is the whole-image pixel area of instance ``k``.
    """
    inside = np.bincount(labels[tile].ravel().astype(np.int64), minlength=len(areas))
    ids = np.nonzero(inside[1:])[0] + 1
    counted = int(np.sum(inside[ids] >= fraction * areas[ids]))
    return counted > 0, counted


def _identity(path: Path) -> tuple[str | None, str]:
    match = _TCGA.search(path.name)
    return (match[1].upper() if match else None), path.name.split(".")[0]


def convert_nuclei_tiles(images_folder: str | os.PathLike[str],
                         annotations_folder: str | os.PathLike[str],
                         dst: str | os.PathLike[str], *,
                         task: Literal["nuclei", "nuclei-tiles"] = "nuclei",
                         tile_size: int = 256, modality: str = "HE",
                         mpp: float | None = None) -> Dataset:
    """Convert annotated tiles to a nuclei dataset.

    Parameters
    ----------
    images_folder, annotations_folder : str or os.PathLike
        The tiles (PNG/TIFF/JPEG) and their annotations (see the module docstring).
    dst : str or os.PathLike
        The dataset folder to create or extend.
    task : {"nuclei", "nuclei-tiles"}
        ``"nuclei"``: one item per tile with its instance labels (uint16/uint32).
        ``"nuclei-tiles"``: each tile cut into ``tile_size`` squares (edge remainders
        dropped), labelled NUCLEI (1) when at least one nucleus has at least half of its
        area inside, else NO_NUCLEUS (0); no mask.
    tile_size : int
        Square size for ``"nuclei-tiles"``.
    modality : str
        Stain, default ``"HE"``.
    mpp : float, optional
        µm per pixel of the tiles, if known.

    Returns
    -------
    Dataset
        ``patient_id`` is the TCGA patient (``TCGA-DB-5270``) found in the name, else None;
        ``slide_id`` the name up to its first dot; ``extra["n_nuclei"]`` the nuclei counted.

    Raises
    ------
    DatasetError
        If there are no tiles, a tile has no annotation, or files are unreadable.
    """
    if task not in ("nuclei", "nuclei-tiles"):
        raise DatasetError(f"task must be 'nuclei' or 'nuclei-tiles', not {task!r}")
    images = image_tiles(images_folder)
    pairs = [(p, _find_annotation(p, Path(annotations_folder))) for p in images]
    missing = [p.name for p, a in pairs if a is None]
    if missing:
        raise DatasetError(f"{len(missing)} tile(s) without an annotation in "
                           f"{annotations_folder}, e.g. {missing[0]}")
    classes = NUCLEI_CLASSES if task == "nuclei" else TILE_CLASSES
    with DatasetWriter(dst, task, modality, classes, flush_every=64) as writer:
        for image_path, annotation in pairs:
            assert annotation is not None
            _add_tile(writer, image_path, annotation, task, tile_size, mpp)
    return Dataset.open(dst)


def _add_tile(writer: DatasetWriter, path: Path, annotation: Path, task: str,
              tile_size: int, mpp: float | None) -> None:
    image = read_image_file(path)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    labels = read_instances(annotation, image.shape[:2])
    patient, slide = _identity(path)
    common = {"patient_id": patient, "slide_id": slide, "source_path": path, "mpp": mpp}
    if task == "nuclei":
        n = len(np.unique(labels[labels > 0]))
        writer.add(image, labels, **common, extra={"n_nuclei": n, "annotation": str(annotation)})
        return
    areas = np.bincount(labels.ravel().astype(np.int64))
    h, w = labels.shape
    for y in range(0, h - tile_size + 1, tile_size):
        for x in range(0, w - tile_size + 1, tile_size):
            window = (slice(y, y + tile_size), slice(x, x + tile_size))
            has, count = tile_has_nucleus(labels, window, areas)
            writer.add(image[window], label=int(has), **common, offset=(y, x),
                       extra={"n_nuclei": count, "annotation": str(annotation)})
