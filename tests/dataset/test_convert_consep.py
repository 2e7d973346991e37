"""CoNSeP instance + type maps -> nuclei dataset with per-nucleus types."""

import numpy as np
import pytest
import skimage.io
import tifffile

from napari_neuroseg.dataset import DatasetError, convert_consep
from napari_neuroseg.dataset.convert_consep import NUCLEUS_TYPES, instance_types_of


def _patch(root, name, inst, types=None, size=None):
    for sub in ("images", "inst", "type"):
        (root / sub).mkdir(exist_ok=True)
    shape = size or inst.shape
    image = np.full((*shape, 3), 150 + int(name[-1]), np.uint8)
    skimage.io.imsave(root / "images" / f"{name}.png", image, check_contrast=False)
    tifffile.imwrite(root / "inst" / f"{name}.tif", inst.astype(np.uint16))
    if types is not None:
        skimage.io.imsave(root / "type" / f"{name}.png", types.astype(np.uint8),
                          check_contrast=False)


def _maps():
    inst = np.zeros((32, 32), np.uint16)
    inst[2:10, 2:10], inst[15:25, 15:25] = 1, 2
    types = np.zeros_like(inst, dtype=np.uint8)
    types[2:10, 2:10] = 2
    types[15:25, 15:25] = 3
    types[15:17, 15:25] = 4  # a minority of instance 2's pixels
    return inst, types


def test_each_instance_gets_the_type_most_of_its_pixels_carry(tmp_path):
    inst, types = _maps()
    _patch(tmp_path, "train_3_000", inst, types)
    _patch(tmp_path, "train_3_001", inst, types)
    data = convert_consep(tmp_path, tmp_path / "ds")
    item = data.items[0]
    assert item.extra["types"] == {"1": 2, "2": 3}
    assert item.extra["type_names"]["2"] == "inflammatory"
    assert item.patient_id == "consep-train_3" and item.region["mpp"] == 0.25
    assert np.array_equal(data.read_mask(item), inst)


def test_an_untyped_instance_is_type_zero_and_no_type_map_means_no_types(tmp_path):
    inst, types = _maps()
    types[2:10, 2:10] = 0
    assert instance_types_of(inst, types) == {1: 0, 2: 3}
    _patch(tmp_path, "train_1_000", inst)
    data = convert_consep(tmp_path, tmp_path / "ds")
    assert "types" not in data.items[0].extra


def test_unknown_type_ids_and_size_mismatches_are_errors_naming_the_file(tmp_path):
    inst, types = _maps()
    types[0, 0] = 9
    _patch(tmp_path, "train_1_000", inst, types)
    with pytest.raises(DatasetError, match=r"train_1_000\.png: unknown nucleus type id\(s\) \[9\]"):
        convert_consep(tmp_path, tmp_path / "ds")
    inst, types = _maps()
    _patch(tmp_path, "train_1_000", inst, types, size=(30, 32))
    with pytest.raises(DatasetError, match=r"train_1_000\.tif: instance map \(32, 32\) differs"):
        convert_consep(tmp_path, tmp_path / "ds")
    with pytest.raises(DatasetError, match="type map"):
        instance_types_of(inst, types[:5])
    assert set(NUCLEUS_TYPES) == {0, 1, 2, 3, 4}
