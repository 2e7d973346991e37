"""QuPath GeoJSON: exact pixel-boundary polygons, holes, classes, and the round trip."""

import json

import numpy as np
import pytest

from napari_neuroseg.annotate.geojson import (
    GeoJSONError,
    geojson_to_labels,
    labels_to_geojson,
    read_geojson,
    write_geojson,
)

CLASSES = {0: "background", 1: "CT", 2: "LE", 3: "IT"}


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


@pytest.fixture
def tissue_labels():
    labels = np.zeros((240, 320), np.uint8)
    labels[_disc(labels.shape, (100, 110), 70)] = 1
    labels[_disc(labels.shape, (100, 110), 25)] = 2  # an island of LE inside CT
    labels[180:230, 20:300] = 3
    labels[195:210, 60:90] = 0  # a hole in IT
    labels[20:40, 250:270] = 3  # a second IT piece: a MultiPolygon
    return labels


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())


def test_export_matches_qupaths_format(tissue_labels):
    data = labels_to_geojson(tissue_labels, CLASSES, offset=(100, 200), downsample=4,
                             colors={1: (1.0, 0.0, 0.0), 2: (0, 255, 0)})
    assert data["type"] == "FeatureCollection"
    by_name = {f["properties"]["classification"]["name"]: f for f in data["features"]}
    assert set(by_name) == {"CT", "LE", "IT"}
    for feature in data["features"]:
        assert feature["type"] == "Feature" and isinstance(feature["id"], str)
        assert feature["properties"]["objectType"] == "annotation"
        for polygon in (feature["geometry"]["coordinates"]
                        if feature["geometry"]["type"] == "MultiPolygon"
                        else [feature["geometry"]["coordinates"]]):
            for ring in polygon:
                assert ring[0] == ring[-1]  # closed rings
    assert by_name["CT"]["properties"]["classification"]["color"] == [255, 0, 0]
    assert by_name["LE"]["properties"]["classification"]["color"] == [0, 255, 0]
    assert by_name["IT"]["geometry"]["type"] == "MultiPolygon"
    assert by_name["CT"]["geometry"]["type"] == "Polygon"
    assert len(by_name["CT"]["geometry"]["coordinates"]) == 2  # outer ring + the LE hole
    xs = [p[0] for ring in by_name["CT"]["geometry"]["coordinates"] for p in ring]
    ys = [p[1] for ring in by_name["CT"]["geometry"]["coordinates"] for p in ring]
    cols = np.nonzero((tissue_labels == 1).any(axis=0))[0]
    rows = np.nonzero((tissue_labels == 1).any(axis=1))[0]
    # level-0 pixel corners: (offset + corner) * downsample
    assert min(xs) == (200 + cols[0]) * 4 and max(xs) == (200 + cols[-1] + 1) * 4
    assert min(ys) == (100 + rows[0]) * 4 and max(ys) == (100 + rows[-1] + 1) * 4


def test_round_trip_at_the_same_grid_is_exact(tissue_labels, tmp_path):
    data = labels_to_geojson(tissue_labels, CLASSES, offset=(100, 200), downsample=4)
    path = write_geojson(tmp_path / "a.geojson", data)
    back = geojson_to_labels(path, tissue_labels.shape, CLASSES, offset=(100, 200),
                             downsample=4)
    assert back.features == 3 and back.skipped == 0 and back.added == []
    np.testing.assert_array_equal(back.labels, tissue_labels)


def test_round_trip_at_another_resolution_is_close(tissue_labels):
    data = labels_to_geojson(tissue_labels, CLASSES, offset=(0, 0), downsample=2.0)
    # the same area on a grid twice as coarse (downsample 4), shifted by (10, 20) pixels
    coarse = geojson_to_labels(data, (130, 170), CLASSES, offset=(-10, -20), downsample=4.0)
    expected = np.zeros((130, 170), np.uint8)
    expected[10:130, 20:170] = tissue_labels[::2, ::2][:120, :150]
    for class_id in (1, 2, 3):
        assert _iou(coarse.labels == class_id, expected == class_id) > 0.9


def test_instances_round_trip_as_detections_with_the_same_count():
    labels = np.zeros((128, 128), np.int32)
    rng = np.random.default_rng(0)
    n = 0
    for y in range(10, 120, 22):
        for x in range(10, 120, 22):
            n += 1
            labels[_disc(labels.shape, (y + rng.integers(0, 4), x), 8)] = n
    labels[40:44, 40:60] = n + 1  # one nucleus touching two others
    data = labels_to_geojson(labels, {0: "background", 1: "nucleus"}, instances=True)
    assert len(data["features"]) == n + 1
    assert {f["properties"]["objectType"] for f in data["features"]} == {"detection"}
    back = geojson_to_labels(data, labels.shape, {0: "background", 1: "nucleus"},
                             instances=True)
    assert len(np.unique(back.labels[back.labels > 0])) == n + 1
    for k in np.unique(labels[labels > 0]):
        ids, counts = np.unique(back.labels[labels == k], return_counts=True)
        assert _iou(back.labels == ids[np.argmax(counts)], labels == k) > 0.95


def test_unknown_classes_raise_or_are_added(tissue_labels):
    data = labels_to_geojson(tissue_labels, CLASSES)
    data["features"][0]["properties"]["classification"] = {"name": "Necrosis",
                                                           "color": [0, 0, 0]}
    with pytest.raises(GeoJSONError, match=r"\['Necrosis'\] are not in the class map"):
        geojson_to_labels(data, tissue_labels.shape, CLASSES)
    out = geojson_to_labels(data, tissue_labels.shape, CLASSES, unknown="add")
    assert out.added == ["Necrosis"] and out.class_map[4] == "Necrosis"
    assert (out.labels == 4).sum() > 0


def test_reads_older_qupath_files_and_plain_lists(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[2, 2], [6, 2], [6, 6], [2, 6], [2, 2]]]}
    features = [
        {"type": "Feature", "id": "PathAnnotationObject", "geometry": square,
         "properties": {"classification": {"name": "le", "colorRGB": -3670016},
                        "isLocked": False}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]},
         "properties": {"object_type": "annotation"}},
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(features))
    assert len(read_geojson(path)) == 2
    out = geojson_to_labels(path, (8, 8), CLASSES)  # class names match ignoring case
    assert out.skipped == 1 and out.features == 1
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 2:6] = 2
    np.testing.assert_array_equal(out.labels, expected)


def test_bad_inputs_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(GeoJSONError, match=r"bad\.geojson: not a readable GeoJSON"):
        read_geojson(bad)
    with pytest.raises(GeoJSONError, match="expected a FeatureCollection"):
        read_geojson({"type": "Polygon"})
    with pytest.raises(GeoJSONError, match="class id 5"):
        labels_to_geojson(np.full((4, 4), 5, np.uint8), CLASSES)


def test_many_classes_with_many_holes_round_trip_exactly():
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(512, 512)), 6)
    labels = np.digitize(field, np.quantile(field, [0.5, 0.75, 0.9])).astype(np.uint8)
    data = labels_to_geojson(labels, CLASSES, offset=(7, 3), downsample=1.5)
    back = geojson_to_labels(data, labels.shape, CLASSES, offset=(7, 3), downsample=1.5)
    np.testing.assert_array_equal(back.labels, labels)
