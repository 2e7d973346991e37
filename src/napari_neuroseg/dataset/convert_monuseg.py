"""Convert MoNuSeg 2018 tiles (Aperio ImageScope XML contours) to a ``nuclei`` dataset.

The MoNuSeg layout is a folder of images (``<name>.tif``/``.png``/``.jpg``) and a folder of
annotations (``<name>.xml``): ``<Annotations MicronsPerPixel=".."><Annotation><Regions>
<Region Id=..><Vertices><Vertex X=".." Y=".."/>...``, one ``Region`` per nucleus in pixel
coordinates of the tile. The polygons of neighbouring nuclei overlap by a pixel or two, so
they are filled largest first: a pixel claimed by two nuclei goes to the smaller one, which
keeps small nuclei whole, and every pixel has one instance. A nucleus left with no pixel of
its own is dropped.

MoNuSeg tiles are 40x scans of several scanners: the XMLs' ``MicronsPerPixel`` ranges from
0.2468 to 0.2527. A dataset holds one resolution, so the items carry the nominal ``mpp``
(0.25 µm/px) and each XML's own value is kept in ``extra["xml_mpp"]``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from skimage.draw import polygon as fill_polygon

from .convert_nuclei import image_tiles, patient_of, read_rgb
from .layout import Dataset
from .manifest import DatasetError
from .tasks import NUCLEI_CLASSES
from .writer import DatasetWriter

__all__ = ["MONUSEG_MPP", "convert_monuseg", "monuseg_instances", "monuseg_regions"]

#: µm per pixel of the MoNuSeg 40x scans when an XML does not say.
MONUSEG_MPP = 0.25


def monuseg_regions(path: str | os.PathLike[str], *, drop_degenerate: bool = False
                    ) -> tuple[list[np.ndarray], float | None, list[str]]:
    """The nucleus polygons of an ImageScope XML (``(n, 2)`` arrays of ``(x, y)``), its
    ``MicronsPerPixel`` (None if absent) and the ids of the regions dropped.

    ``drop_degenerate`` drops regions with fewer than 3 vertices instead of raising (the
    MoNuSeg 2018 training set has a few: 2-point clicks, not contours).

    Raises
    ------
    DatasetError
        If the file is not XML, holds no ``Region``, or a region has fewer than 3 vertices or a
        vertex that is not a number; the message names the file and the region.
    """
    try:
        root = ET.fromstring(Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{path}: unreadable ImageScope XML ({exc})") from exc
    polygons, dropped = [], []
    for region in root.iter("Region"):
        name = region.get("Id", str(len(polygons) + 1))
        try:
            points = [(float(v.get("X", "")), float(v.get("Y", "")))
                      for v in region.iter("Vertex")]
        except ValueError:
            raise DatasetError(f"{path}: region {name} has a vertex that is not a number") \
                from None
        if len(points) < 3 and drop_degenerate:
            dropped.append(name)
            continue
        if len(points) < 3:
            raise DatasetError(f"{path}: region {name} has {len(points)} vertices; a nucleus "
                               "contour needs at least 3 (drop_degenerate=True drops such regions)")
        polygons.append(np.asarray(points))
    if not polygons:
        raise DatasetError(f"{path}: no <Region> (nucleus contour) in this ImageScope XML")
    mpp = root.get("MicronsPerPixel")
    try:
        return polygons, (float(mpp) if mpp else None), dropped
    except ValueError:
        raise DatasetError(f"{path}: MicronsPerPixel {mpp!r} is not a number") from None


def monuseg_instances(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Instance ids (uint16 if they fit, else uint32) of polygons filled largest first.

    Overlaps go to the smaller nucleus; instances without a pixel of their own are dropped
    and the ids are consecutive (1, 2, ...) in the order of the polygons.
    """
    masks = [fill_polygon(p[:, 1], p[:, 0], shape=shape) for p in polygons]
    order = sorted(range(len(masks)), key=lambda k: -len(masks[k][0]))
    labels = np.zeros(shape, np.uint32)
    for k in order:
        rr, cc = masks[k]
        labels[rr, cc] = k + 1
    ids = np.unique(labels[labels > 0])
    lookup = np.zeros(len(polygons) + 1, np.uint32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    out = lookup[labels]
    return out.astype(np.uint16) if len(ids) < 2**16 else out


def convert_monuseg(images_folder: str | os.PathLike[str],
                    annotations_folder: str | os.PathLike[str],
                    dst: str | os.PathLike[str], *, mpp: float = MONUSEG_MPP,
                    drop_degenerate: bool = False) -> Dataset:
    """Convert MoNuSeg tiles and their ImageScope XML to a ``nuclei`` dataset.

    Parameters
    ----------
    images_folder, annotations_folder : str or os.PathLike
        ``<name>.{tif,png,jpg}`` and ``<name>.xml``.
    dst : str or os.PathLike
        The dataset folder to create or extend.
    mpp : float
        The tiles' nominal µm/px (each XML's ``MicronsPerPixel`` goes in ``extra``).
    drop_degenerate : bool
        Drop regions with fewer than 3 vertices (listed in ``extra["dropped_regions"]``)
        instead of raising.

    Returns
    -------
    Dataset
        One item per tile; ``patient_id`` is the TCGA patient in the name,
        ``extra`` holds ``source`` ("monuseg"), ``n_nuclei`` and the annotation path.

    Raises
    ------
    DatasetError
        If there are no tiles, one has no XML, a polygon is invalid (see
        :func:`monuseg_regions`) or a polygon lies wholly outside its tile.
    """
    tiles = image_tiles(images_folder)
    with DatasetWriter(dst, "nuclei", "HE", NUCLEI_CLASSES, flush_every=64) as writer:
        for path in tiles:
            xml = Path(annotations_folder) / f"{path.stem}.xml"
            if not xml.is_file():
                raise DatasetError(f"{path}: no annotation {xml.name} in {annotations_folder}")
            image = read_rgb(path)
            polygons, tile_mpp, dropped = monuseg_regions(xml, drop_degenerate=drop_degenerate)
            _check_inside(polygons, image.shape[:2], xml)
            labels = monuseg_instances(polygons, image.shape[:2])
            writer.add(image, labels, patient_id=patient_of(path), slide_id=path.stem,
                       source_path=path, mpp=mpp,
                       extra={"source": "monuseg", "n_nuclei": int(labels.max()),
                              "annotation": str(xml), "dropped_regions": dropped,
                              "xml_mpp": tile_mpp})
    return Dataset.open(dst)


def _check_inside(polygons: list[np.ndarray], shape: tuple[int, int], where: Path) -> None:
    height, width = shape
    for k, points in enumerate(polygons, start=1):
        x, y = points[:, 0], points[:, 1]
        if x.max() < 0 or y.max() < 0 or x.min() >= width or y.min() >= height:
            raise DatasetError(f"{where}: polygon {k} lies outside the {width}x{height} tile "
                               "(image and annotation do not belong together?)")
