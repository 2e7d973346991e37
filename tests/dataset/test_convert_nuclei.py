"""convert_nuclei_tiles: XML polygons, label PNGs, the NUCLEI tile rule, the real tiles."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.io

from napari_neuroseg.dataset import DatasetError, convert_nuclei_tiles
from napari_neuroseg.dataset.convert_nuclei import label_image_instances, tile_has_nucleus

NAME = "TCGA-DB-5270-R01.tif_normal.png_normal_small"


def _shape(points, kind="SmoothPolygon"):
    pts = "".join(f'<Point X="{x}" Y="{y}" />' for x, y in points)
    return f'<Shape Type="{kind}"><Data><Points>{pts}</Points></Data></Shape>'


def _square(x, y, side):
    return [(x, y), (x + side, y), (x + side, y + side), (x, y + side)]


def _write_xml(path, shapes):
    body = "".join(shapes)
    text = f"<Document><Layers><Layer><Shapes>{body}</Shapes></Layer></Layers></Document>"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())


@pytest.fixture
def tiles(tmp_path):
    images, notes = tmp_path / "raw_image", tmp_path / "xml"
    images.mkdir()
    notes.mkdir()
    skimage.io.imsave(images / f"{NAME}.png", np.full((64, 64, 3), 200, np.uint8),
                      check_contrast=False)
    oval = ('<Shape Type="Oval"><Data Rotation="0"><Extent X="40" Y="40" Width="10" '
            'Height="6" /></Data></Shape>')
    # nucleus 1 fully in the top-left 32 tile; nucleus 2 straddles x=32 with 75 % on the
    # right; one oval in the bottom-right tile; the bottom-left tile is empty
    _write_xml(notes / f"{NAME}_data.xml", [_shape(_square(4, 4, 8)),
                                            _shape(_square(26, 4, 24)), oval])
    return images, notes


def test_xml_rasterised_to_instances(tiles, tmp_path):
    ds = convert_nuclei_tiles(*tiles, tmp_path / "ds")
    assert ds.task == "nuclei" and len(ds) == 1
    item = ds.items[0]
    assert (item.patient_id, item.slide_id) == ("TCGA-DB-5270", "TCGA-DB-5270-R01")
    assert item.extra["n_nuclei"] == 3
    labels = ds.read_mask(item)
    assert labels.shape == (64, 64) and set(np.unique(labels)) == {0, 1, 2, 3}
    # skimage.draw.polygon fills the closed square's pixel centres inside [4, 12]
    assert 64 <= np.sum(labels == 1) <= 81


def test_nuclei_tiles_rule(tiles, tmp_path):
    ds = convert_nuclei_tiles(*tiles, tmp_path / "ds", task="nuclei-tiles", tile_size=32)
    by_offset = {tuple(i.region["offset"]): (i.label, i.extra["n_nuclei"]) for i in ds}
    assert by_offset == {(0, 0): (1, 1), (0, 32): (1, 1), (32, 0): (0, 0), (32, 32): (1, 1)}
    assert ds.class_map == {0: "NO_NUCLEUS", 1: "NUCLEI"}
    assert all(i.mask is None and i.shape == (32, 32, 3) for i in ds)


def test_half_inside_rule_directly():
    labels = np.zeros((8, 8), np.uint8)
    labels[0:2, 2:6] = 1  # 8 px, 4 in the left half
    labels[4:6, 3:8] = 2  # 10 px, 2 in the left half
    areas = np.bincount(labels.ravel())
    left = (slice(0, 8), slice(0, 4))
    assert tile_has_nucleus(labels, left, areas) == (True, 1)
    assert tile_has_nucleus(labels, left, areas, fraction=0.6) == (False, 0)


def test_colour_coded_and_binary_label_images():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[1:4, 1:4] = (0, 0, 255)
    rgb[1:4, 4:7] = (255, 0, 0)  # touches the blue one: still separate
    rgb[6:9, 6:9] = (0, 0, 255)
    rgb[0, :] = (0, 255, 0)  # boundary colour is background
    labels = label_image_instances(rgb)
    assert len(np.unique(labels[labels > 0])) == 3 and labels[0].max() == 0
    binary = np.zeros((10, 10), np.uint8)
    binary[1:3, 1:3] = 255
    binary[6:8, 6:8] = 255
    assert label_image_instances(binary).max() == 2


def test_png_labels_and_missing_annotation(tmp_path):
    images, notes = tmp_path / "img", tmp_path / "gt"
    images.mkdir()
    notes.mkdir()
    skimage.io.imsave(images / "a.png", np.zeros((16, 16, 3), np.uint8), check_contrast=False)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[2:6, 2:6] = (255, 0, 0)
    skimage.io.imsave(notes / "a.png", rgb, check_contrast=False)
    ds = convert_nuclei_tiles(images, notes, tmp_path / "ds", modality="IHC")
    assert ds.items[0].patient_id is None and ds.items[0].extra["n_nuclei"] == 1
    skimage.io.imsave(images / "b.png", np.zeros((16, 16, 3), np.uint8), check_contrast=False)
    with pytest.raises(DatasetError, match=r"without an annotation.*b.png"):
        convert_nuclei_tiles(images, notes, tmp_path / "ds2")


@pytest.mark.realdata
def test_real_nuclei_tiles(shared_data, tmp_path):
    root = shared_data / "nuclei_lgg_tiles"
    ds = convert_nuclei_tiles(root / "raw_image", root / "contour_annotation_xml",
                              tmp_path / "ds")
    assert len(ds) == 36 and len(ds.patients()) == 5
    total = sum(i.extra["n_nuclei"] for i in ds)
    assert abs(total - 4963) <= 0.01 * 4963  # README: 4,963 nuclei (measured: 4,963)
