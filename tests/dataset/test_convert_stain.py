"""Unpaired IHC/H&E tiles -> ``stain`` dataset; DeepLIIF colour-coded nuclei -> instances."""

from pathlib import Path

import numpy as np
import pytest
import skimage.io

from napari_neuroseg.dataset import DatasetError
from napari_neuroseg.dataset.convert_stain import (
    StainSource,
    convert_ihc_nuclei,
    convert_stain,
    decode_nuclei_colours,
    ihc_he_sources,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BLUE, RED, GREEN = (0, 0, 255), (255, 0, 0), (0, 255, 0)


def _coded(size=48):
    """Two blue nuclei and one red, each a disc of radius 5 in a 2-px green ring."""
    yy, xx = np.mgrid[:size, :size]
    code = np.zeros((size, size, 3), np.uint8)
    for (y, x), colour in (((10, 10), BLUE), ((10, 30), BLUE), ((32, 20), RED)):
        r2 = (yy - y) ** 2 + (xx - x) ** 2
        code[r2 < 49] = GREEN
        code[r2 < 25] = colour
    return code


def _png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    skimage.io.imsave(path, image, check_contrast=False)
    return path


def test_colour_coded_nuclei_become_instances_with_their_boundaries():
    labels, positive = decode_nuclei_colours(_coded())
    assert labels.max() == 3
    assert sorted(positive.values()) == [False, False, True]
    red_id = next(k for k, v in positive.items() if v)
    assert labels[32, 20] == red_id
    assert labels[32, 26] == red_id  # on the green ring: part of its nucleus
    assert labels[0, 0] == 0 and labels[47, 47] == 0
    with pytest.raises(DatasetError, match="RGB"):
        decode_nuclei_colours(np.zeros((8, 8), np.uint8))


def test_convert_stain_resamples_cuts_strip_panels_and_names_patients(tmp_path):
    rng = np.random.default_rng(0)
    strip = _png(tmp_path / "a" / "Lung1.png", rng.integers(0, 255, (32, 96, 3), np.uint8))
    he = [_png(tmp_path / "b" / name, rng.integers(0, 255, (32, 32, 3), np.uint8))
          for name in ("TCGA-DB-5270-R01.png", "train_10_003.png")]
    data = convert_stain(
        [StainSource("deepliif", (strip,), 0.25, first_panel=True, split="train")],
        [StainSource("lgg", (he[0],), 0.25), StainSource("consep", (he[1],), 0.5)],
        tmp_path / "ds")
    by_id = {item.id: item for item in data.items}
    a = by_id["deepliif-Lung1"]
    assert (a.domain, a.split, a.shape, a.region["mpp"]) == ("A", "train", (16, 16, 3), 0.5)
    assert by_id["lgg-TCGA-DB-5270-R01"].patient_id == "TCGA-DB-5270"
    assert by_id["lgg-TCGA-DB-5270-R01"].shape == (16, 16, 3)
    consep = by_id["consep-train_10_003"]
    assert (consep.patient_id, consep.shape, consep.domain) == ("consep-train_10",
                                                                 (32, 32, 3), "B")
    with pytest.raises(DatasetError, match="domain B"):
        convert_stain([StainSource("x", (strip,), 0.5)], [], tmp_path / "none")
    bad = _png(tmp_path / "c" / "wide.png", np.zeros((32, 40, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"wide\.png.*square panels"):
        convert_stain([StainSource("x", (bad,), 0.5, first_panel=True)],
                      [StainSource("y", (he[1],), 0.5)], tmp_path / "odd2")


def test_convert_ihc_nuclei_writes_instance_masks_for_the_evaluation(tmp_path):
    image = np.full((48, 48, 3), 200, np.uint8)
    _png(tmp_path / "img" / "6_2.png", image)
    _png(tmp_path / "gt" / "6_2.png", _coded())
    data = convert_ihc_nuclei(tmp_path / "img", tmp_path / "gt", tmp_path / "ds")
    (item,) = data.items
    assert (item.domain, item.split, item.region["mpp"]) == ("A", "test", 0.25)
    assert data.read_mask(item).max() == 3 and item.extra["n_nuclei"] == 3
    assert len(item.extra["ki67_positive"]) == 1
    _png(tmp_path / "img" / "7_1.png", image)
    with pytest.raises(DatasetError, match="no ground truth"):
        convert_ihc_nuclei(tmp_path / "img", tmp_path / "gt", tmp_path / "ds2")


@pytest.mark.skipif(not (SHARED / "ihc").is_dir(), reason="../shared/data is absent")
def test_the_shared_sets_name_three_training_ihc_images_and_three_he_sources():
    domain_a, domain_b = ihc_he_sources(SHARED)
    a = {s.name: (len(s.files), s.split, s.first_panel) for s in domain_a}
    assert a == {"skimage-ihc": (1, "train", False), "deepliif": (2, "train", True),
                 "deepliif-test": (4, "val", False)}
    assert not any("groundtruth" in str(f) for s in domain_a for f in s.files)
    assert {s.name: len(s.files) for s in domain_b} == {"lgg": 36, "monuseg": 13,
                                                         "consep": 432}
