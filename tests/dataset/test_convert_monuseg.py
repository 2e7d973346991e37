"""MoNuSeg ImageScope XML -> nuclei dataset: overlaps, resolution, bad input."""

import numpy as np
import pytest
import skimage.io

from napari_neuroseg.dataset import DatasetError, convert_monuseg
from napari_neuroseg.dataset.convert_monuseg import monuseg_instances, monuseg_regions


def _xml(regions, mpp="0.2527"):
    head = f'<Annotations MicronsPerPixel="{mpp}">' if mpp else "<Annotations>"
    body = "".join(
        f'<Region Id="{k}"><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in points)
        + "</Vertices></Region>" for k, points in enumerate(regions, start=1))
    return f'{head}<Annotation Id="1"><Regions>{body}</Regions></Annotation></Annotations>'


def _square(x0, y0, side):
    return [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]


def _write(folder, name, regions, size=40, mpp="0.2527"):
    (folder / "images").mkdir(exist_ok=True)
    (folder / "annotations").mkdir(exist_ok=True)
    skimage.io.imsave(folder / "images" / f"{name}.png",
                      np.full((size, size, 3), 150 + len(regions) * 7 + len(name), np.uint8),
                      check_contrast=False)
    (folder / "annotations" / f"{name}.xml").write_text(_xml(regions, mpp))


def test_overlapping_contours_give_each_pixel_one_instance_the_smaller_nucleus_kept_whole():
    big, small = np.asarray(_square(2, 2, 20), float), np.asarray(_square(15, 15, 8), float)
    labels = monuseg_instances([small, big], (40, 40))
    assert set(np.unique(labels)) == {0, 1, 2}
    # the small square (id 1, listed first) keeps all its pixels, the big one loses the overlap
    alone = monuseg_instances([small], (40, 40))
    assert np.array_equal(labels == 1, alone == 1)
    assert labels[18, 18] == 1 and labels[5, 5] == 2


def test_a_nucleus_covered_by_others_is_dropped_and_ids_stay_consecutive():
    inner, outer = np.asarray(_square(5, 5, 4), float), np.asarray(_square(2, 2, 12), float)
    hidden = np.asarray(_square(5, 5, 4), float)  # same as inner: one of the two is left empty
    labels = monuseg_instances([outer, inner, hidden], (20, 20))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]


def test_tiles_convert_with_the_nominal_resolution_and_the_xml_value_kept(tmp_path):
    _write(tmp_path, "TCGA-AA-0001-01Z-00-DX1", [_square(2, 2, 8), _square(20, 20, 10)])
    _write(tmp_path, "TCGA-BB-0002-01Z-00-DX1", [_square(5, 5, 6)], mpp="0.2468")
    data = convert_monuseg(tmp_path / "images", tmp_path / "annotations", tmp_path / "ds")
    assert [i.patient_id for i in data.items] == ["TCGA-AA-0001", "TCGA-BB-0002"]
    assert {i.region["mpp"] for i in data.items} == {0.25}
    assert [i.extra["xml_mpp"] for i in data.items] == [0.2527, 0.2468]
    assert [i.extra["n_nuclei"] for i in data.items] == [2, 1]
    assert data.items[0].extra["source"] == "monuseg"
    assert data.read_mask(data.items[0]).max() == 2


def test_a_contour_with_two_vertices_is_an_error_naming_file_and_region(tmp_path):
    _write(tmp_path, "TCGA-AA-0001-01Z-00-DX1", [_square(2, 2, 8), [(1, 1), (3, 3)]])
    with pytest.raises(DatasetError, match=r"TCGA-AA-0001-01Z-00-DX1\.xml: region 2 has 2 "):
        convert_monuseg(tmp_path / "images", tmp_path / "annotations", tmp_path / "ds")
    data = convert_monuseg(tmp_path / "images", tmp_path / "annotations", tmp_path / "ds2",
                           drop_degenerate=True)
    assert data.items[0].extra["dropped_regions"] == ["2"]
    assert data.items[0].extra["n_nuclei"] == 1


def test_bad_xml_and_missing_annotations_are_errors_naming_the_file(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<Annotations><Region")
    with pytest.raises(DatasetError, match=r"bad\.xml: unreadable"):
        monuseg_regions(bad)
    empty = tmp_path / "empty.xml"
    empty.write_text("<Annotations/>")
    with pytest.raises(DatasetError, match=r"empty\.xml: no <Region>"):
        monuseg_regions(empty)
    nan = tmp_path / "nan.xml"
    nan.write_text('<Annotations><Region Id="7"><Vertices><Vertex X="a" Y="1"/></Vertices>'
                   "</Region></Annotations>")
    with pytest.raises(DatasetError, match=r"nan\.xml: region 7 has a vertex"):
        monuseg_regions(nan)
    _write(tmp_path, "t1", [_square(100, 100, 5)])
    with pytest.raises(DatasetError, match=r"t1\.xml: polygon 1 lies outside the 40x40 tile"):
        convert_monuseg(tmp_path / "images", tmp_path / "annotations", tmp_path / "ds")
    (tmp_path / "annotations" / "t1.xml").unlink()
    with pytest.raises(DatasetError, match=r"t1\.png: no annotation t1\.xml"):
        convert_monuseg(tmp_path / "images", tmp_path / "annotations", tmp_path / "ds")
