"""QuPath GeoJSON: labels to polygons with class names, and polygons back to labels.

The format is what QuPath 0.4 and later write with *File > Export objects as GeoJSON*: a
``FeatureCollection`` whose features carry a ``Polygon`` or ``MultiPolygon`` geometry (holes
as extra rings) and ``properties`` with ``objectType`` (``"annotation"``, or ``"detection"``
for nuclei) and ``classification: {"name": str, "color": [r, g, b]}``. Coordinates are
level-0 pixels of the slide with the origin at the top-left *corner* of the top-left pixel,
as QuPath stores its ROIs. Reading also accepts QuPath 0.2/0.3 files (``object_type``,
``colorRGB``, ``names``, a plain list of features, ``id: "PathAnnotationObject"``).

Export traces the exact pixel boundaries (vertices on pixel corners, 4-connected pieces,
holes kept), so importing at the same level and offset gives back the same labels; at another
resolution the polygons are rasterised (pixel centres inside a polygon are filled).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from napari_neuroseg.annotate.pixel_polygons import fill_polygon, mask_polygons
from napari_neuroseg.io._atomic import atomic_path

__all__ = [
    "DEFAULT_COLORS",
    "GeoJSONError",
    "ImportedLabels",
    "geojson_to_labels",
    "labels_to_geojson",
    "read_geojson",
    "write_geojson",
]

#: Colours used for classes without one (RGB, 0-255), by class id modulo their number.
DEFAULT_COLORS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                  (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))
#: QuPath's name for objects without a classification.
UNCLASSIFIED = "Unclassified"


class GeoJSONError(ValueError):
    """A GeoJSON file or labels that cannot be converted; the message says what and where."""


# -- labels -> polygons ---------------------------------------------------------------------
def _geometry(polygons: list[list[np.ndarray]], offset: Sequence[float],
              downsample: float) -> dict[str, Any]:
    def ring_coords(ring: np.ndarray) -> list[list[float]]:
        xy = (ring + np.array([offset[1], offset[0]], float)) * downsample
        closed = np.vstack([xy, xy[:1]])
        return [[round(float(x), 3), round(float(y), 3)] for x, y in closed]

    parts = [[ring_coords(ring) for ring in polygon] for polygon in polygons]
    if len(parts) == 1:
        return {"type": "Polygon", "coordinates": parts[0]}
    return {"type": "MultiPolygon", "coordinates": parts}


def _color(class_id: int, colors: Mapping[int, Sequence[float]] | None) -> list[int]:
    if colors is not None and class_id in colors:
        rgb = [float(v) for v in colors[class_id]][:3]
        scale = 255.0 if max(rgb) <= 1.0 else 1.0
        return [round(v * scale) for v in rgb]
    return list(DEFAULT_COLORS[class_id % len(DEFAULT_COLORS)])


def labels_to_geojson(labels: np.ndarray, class_map: Mapping[int, str], *,
                      offset: Sequence[int] = (0, 0), downsample: float = 1.0,
                      instances: bool = False,
                      colors: Mapping[int, Sequence[float]] | None = None) -> dict[str, Any]:
    """A QuPath GeoJSON FeatureCollection of a labels array.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(h, w)`` integer labels: class ids, or instance ids with ``instances=True``.
    class_map : mapping of int to str
        Class id to name (class 0, background, is not exported). For instances, the name of
        class 1 names every nucleus.
    offset : (int, int)
        ``(y, x)`` of ``labels[0, 0]`` on its own pixel grid (the region's offset).
    downsample : float
        Level-0 pixels per label pixel; coordinates are ``(offset + corner) * downsample``.
    instances : bool
        One ``"detection"`` feature per instance id (nuclei) instead of one ``"annotation"``
        per class (a ``MultiPolygon`` when the class has several pieces).
    colors : mapping of int to (r, g, b), optional
        Class colours, 0-255 or 0-1; :data:`DEFAULT_COLORS` otherwise.

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}`` ready for :func:`json.dump`.

    Raises
    ------
    GeoJSONError
        If the labels are not a 2-D integer array, or hold class ids outside the class map.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "uib":
        raise GeoJSONError(f"labels must be a 2-D integer array, got {labels.dtype} "
                           f"{labels.shape}")
    if labels.size and labels.min() < 0:
        raise GeoJSONError("labels hold negative ids")
    features = []
    boxes = ndimage.find_objects(labels.astype(np.int64))
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        class_id = 1 if instances else index
        if class_id not in class_map:
            raise GeoJSONError(f"labels hold class id {class_id}, which is not in the class "
                               f"map {dict(class_map)}")
        polygons = mask_polygons(labels[box] == index)
        origin = (offset[0] + box[0].start, offset[1] + box[1].start)
        props: dict[str, Any] = {
            "objectType": "detection" if instances else "annotation",
            "classification": {"name": class_map[class_id],
                               "color": _color(class_id, colors)},
        }
        if not instances:
            props["isLocked"] = False
        features.append({"type": "Feature", "id": str(uuid.uuid4()),
                         "geometry": _geometry(polygons, origin, float(downsample)),
                         "properties": props})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], collection: Mapping[str, Any]) -> Path:
    """Write a FeatureCollection atomically (temporary name, then rename); return the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(collection), encoding="utf-8")
    return target


# -- polygons -> labels ---------------------------------------------------------------------
def read_geojson(source: str | os.PathLike[str] | Mapping[str, Any] | list) -> list[dict]:
    """The features of a GeoJSON file or object (FeatureCollection, Feature or a list).

    Raises
    ------
    GeoJSONError
        If the file is unreadable or not GeoJSON features (the message names the file).
    """
    where = "GeoJSON"
    data: Any = source
    if isinstance(source, str | os.PathLike):
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GeoJSONError(f"{where}: not a readable GeoJSON file ({exc})") from exc
    if isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        data = data.get("features")
    elif isinstance(data, Mapping) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, Mapping) for f in data):
        raise GeoJSONError(f"{where}: expected a FeatureCollection, a Feature or a list of "
                           "features")
    return [dict(f) for f in data]


def feature_class(feature: Mapping[str, Any]) -> str:
    """The classification name of a feature (``"A: B"`` for QuPath's derived classes)."""
    props = feature.get("properties") or {}
    cls = props.get("classification")
    if isinstance(cls, Mapping):
        if isinstance(cls.get("names"), list) and cls["names"]:
            return ": ".join(str(n) for n in cls["names"])
        if cls.get("name"):
            return str(cls["name"])
    elif isinstance(cls, str) and cls:
        return cls
    return UNCLASSIFIED


def _polygons_of(geometry: Any) -> tuple[list[list], int]:
    """Polygons (lists of rings) in a geometry, and how many other shapes were skipped."""
    if not isinstance(geometry, Mapping):
        return [], 1
    kind = geometry.get("type")
    if kind == "Polygon":
        return [geometry.get("coordinates") or []], 0
    if kind == "MultiPolygon":
        return list(geometry.get("coordinates") or []), 0
    if kind == "GeometryCollection":
        out, skipped = [], 0
        for part in geometry.get("geometries") or []:
            polys, n = _polygons_of(part)
            out += polys
            skipped += n
        return out, skipped
    return [], 1


@dataclass
class ImportedLabels:
    """What :func:`geojson_to_labels` made of a GeoJSON file.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(h, w)`` class ids (uint8/uint16) or instance ids (int32).
    class_map : dict of int to str
        The class map used, with any classes added for unknown names.
    features : int
        Features rasterised (outside the region or not: all polygon features count).
    skipped : int
        Features without a polygon (points, lines) that were ignored.
    added : list of str
        Class names that were not in the class map and were added (``unknown="add"``).
    """

    labels: np.ndarray
    class_map: dict[int, str]
    features: int = 0
    skipped: int = 0
    added: list[str] = field(default_factory=list)


def _class_ids(features: list[dict], class_map: Mapping[int, str],
               unknown: Literal["error", "add"], where: str) -> tuple[list[int], dict, list]:
    out_map = {int(k): str(v) for k, v in class_map.items()}
    by_name = {v: k for k, v in out_map.items()}
    by_lower = {v.lower(): k for k, v in out_map.items()}
    ids, added, missing = [], [], []
    for feature in features:
        name = feature_class(feature)
        cid = by_name.get(name, by_lower.get(name.lower()))
        if cid is None:
            if unknown == "error":
                missing.append(name)
                ids.append(-1)
                continue
            cid = max(out_map, default=0) + 1
            out_map[cid], by_name[name], by_lower[name.lower()] = name, cid, cid
            added.append(name)
        ids.append(cid)
    if missing:
        raise GeoJSONError(
            f"{where}: class name(s) {sorted(set(missing))} are not in the class map "
            f"{sorted(out_map.values())}; rename them, add the classes to the class map, or "
            "import with unknown='add'")
    return ids, out_map, added


def geojson_to_labels(source: str | os.PathLike[str] | Mapping[str, Any] | list,
                      shape: Sequence[int], class_map: Mapping[int, str], *,
                      offset: Sequence[int] = (0, 0), downsample: float = 1.0,
                      instances: bool = False,
                      unknown: Literal["error", "add"] = "error") -> ImportedLabels:
    """Rasterise GeoJSON polygons (QuPath annotations or detections) onto a region's grid.

    Parameters
    ----------
    source : path or GeoJSON object
        A QuPath GeoJSON export (any version; see the module docstring).
    shape : (int, int)
        ``(h, w)`` of the labels to make.
    class_map : mapping of int to str
        Class id to name; features are matched by classification name (exactly, else
        ignoring case; unclassified features by QuPath's name ``"Unclassified"``).
    offset : (int, int)
        ``(y, x)`` of the region's first pixel on its grid.
    downsample : float
        Level-0 pixels per label pixel.
    instances : bool
        Give every feature its own id 1, 2, ... (nuclei; a cell's ``nucleusGeometry`` is
        used when present) instead of its class id.
    unknown : {"error", "add"}
        A class name not in the class map raises (default) or becomes a new class with the
        next free id (reported in ``added``).

    Returns
    -------
    ImportedLabels
        Later features overwrite earlier ones where they overlap (QuPath's labelled-image
        export draws in order too); pixel centres inside a polygon and outside its holes
        are filled.

    Raises
    ------
    GeoJSONError
        If the file is not GeoJSON, a class is unknown (``unknown="error"``), or a ring is
        malformed.
    """
    if unknown not in ("error", "add"):
        raise ValueError(f"unknown must be 'error' or 'add', not {unknown!r}")
    where = str(source) if isinstance(source, str | os.PathLike) else "GeoJSON"
    shapes, skipped = [], 0
    for feature in read_geojson(source):
        geometry = feature.get("nucleusGeometry") if instances else None
        polygons, _ = _polygons_of(geometry or feature.get("geometry"))
        if polygons:
            shapes.append((feature, polygons))
        else:
            skipped += 1
    h, w = int(shape[0]), int(shape[1])
    if instances:
        ids, out_map, added = list(range(1, len(shapes) + 1)), dict(class_map), []
        labels = np.zeros((h, w), np.int32)
    else:
        ids, out_map, added = _class_ids([f for f, _ in shapes], class_map, unknown, where)
        labels = np.zeros((h, w), np.uint8 if max(out_map) < 256 else np.uint16)
    for k, ((_, polygons), value) in enumerate(zip(shapes, ids, strict=True)):
        for rings in polygons:
            try:
                filled = fill_polygon((h, w), rings, offset, float(downsample)) if rings else None
            except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
                raise GeoJSONError(f"{where}: feature {k} has malformed coordinates "
                                   f"({exc})") from exc
            if filled is not None:
                box, mask = filled
                labels[box][mask] = value
    return ImportedLabels(labels, dict(sorted(out_map.items())), len(shapes), skipped, added)
