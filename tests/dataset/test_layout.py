"""Dataset.open: the checks that stop a bad dataset before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_neuroseg.dataset import Dataset, DatasetError, DatasetWriter

CLASSES = {0: "background", 1: "lesion"}


@pytest.fixture
def dataset(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", "mri", "MR", CLASSES)
    for k in range(2):
        image = np.full((8, 8, 3), k, np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        mask[k:k + 2, :] = 1
        writer.add(image, mask, patient_id=f"P{k}", item_id=f"s{k}")
    return tmp_path / "ds"


def _edit(root, change):
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_opens_valid_dataset_and_manifest_path(dataset):
    ds = Dataset.open(dataset / "manifest.json")
    assert [i.id for i in ds] == ["s0", "s1"] and ds.items[1].shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a napari-neuroseg dataset"),
        (lambda d: d.update(format_version=2), "newer than this napari-neuroseg"),
        (lambda d: d.update(task="painting"), "unknown task"),
        (lambda d: d.update(class_map={"x": "a"}), "not an integer"),
        (lambda d: d["items"][1].update(id="s0"), "'s0' is used twice"),
        (lambda d: d["items"][0].update(image="images/nope.tif"), "nope.tif: file missing"),
        (lambda d: d["items"][0].update(image="../outside.tif"), "must be relative"),
        (lambda d: d["items"][0].update(mask=None), "item 's0'.*needs a mask"),
        (lambda d: d["items"][0].update(shape=[9, 8, 3]), "manifest says"),
        (lambda d: d["items"][0].update(label=True), "'label' must be"),
        (lambda d: d["items"][0].update(colour="red"), "unknown item keys"),
        (lambda d: d.update(class_map={"0": "background"}), r"class ids \[1\]"),
    ],
)
def test_broken_manifest_names_the_problem(dataset, change, message):
    _edit(dataset, change)
    with pytest.raises(DatasetError, match=message):
        Dataset.open(dataset)


def test_mask_shape_and_values_checked_from_files(dataset):
    tifffile.imwrite(dataset / "masks" / "s1.tif", np.zeros((4, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"item 's1': mask .*s1.tif is \(4, 8\)"):
        Dataset.open(dataset)
    tifffile.imwrite(dataset / "masks" / "s1.tif", np.full((8, 8), 5, np.uint8))
    with pytest.raises(DatasetError, match=r"s1.tif.*class ids \[5\]"):
        Dataset.open(dataset)
    assert len(Dataset.open(dataset, check_pixels=False)) == 2  # headers only


def test_missing_or_corrupt_manifest(tmp_path, dataset):
    with pytest.raises(DatasetError, match="no dataset manifest"):
        Dataset.open(tmp_path)
    (dataset / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        Dataset.open(dataset)


def test_corrupt_image_file(dataset):
    (dataset / "images" / "s0.tif").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"s0.tif: not a readable TIFF"):
        Dataset.open(dataset)


def test_subset_keeps_the_patients_items_and_names_unknown_ones(dataset):
    data = Dataset.open(dataset)
    one = data.subset(["P1"])
    assert [item.id for item in one.items] == ["s1"] and one.task == "mri"
    np.testing.assert_array_equal(one.read_mask("s1"), data.read_mask("s1"))
    with pytest.raises(DatasetError, match="P7"):
        data.subset(["P1", "P7"])
