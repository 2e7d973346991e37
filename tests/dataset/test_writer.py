"""DatasetWriter: round trip, validation on add, idempotence, crash safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_neuroseg.dataset import Dataset, DatasetError, DatasetWriter
from napari_neuroseg.dataset import writer as writer_module

TISSUE = {0: "background", 1: "CT", 2: "LE", 3: "IT"}


def _tile(seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (size, size)).astype(np.uint8)
    return image, mask


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_round_trip_keeps_pixels_and_metadata(tmp_path):
    with DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE) as writer:
        image, mask = _tile(0)
        item_id = writer.add(image, mask, patient_id="P1", slide_id="S1", mpp=0.5,
                             offset=(32, 64), level=1, corrected_by_person=True, split="val")
        writer.add(*_tile(1), patient_id="P2", mpp=0.5)
    ds = Dataset.open(tmp_path / "ds")
    assert (ds.task, ds.modality, ds.class_map) == ("tissue", "HE", TISSUE)
    assert len(ds) == 2 and ds.items[0].id == item_id == "P1_000000"
    np.testing.assert_array_equal(ds.read_image(item_id), image)
    np.testing.assert_array_equal(ds.read_mask(item_id), mask)
    item = ds.item(item_id)
    assert item.region == {"level": 1, "offset": [32, 64], "size": [16, 16], "mpp": 0.5,
                           "spacing_mm": None}
    assert (item.patient_id, item.slide_id, item.split) == ("P1", "S1", "val")
    assert item.corrected_by_person is True and item.created.endswith("Z")
    counts = ds.class_pixel_counts()[item_id]
    assert counts == {k: int(np.sum(mask == k)) for k in TISSUE}
    assert ds.patients() == {"P1": ["P1_000000"], "P2": ["P2_000001"]}
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["format"] == "napari-neuroseg-dataset" and manifest["format_version"] == 1
    assert manifest["class_map"] == {"0": "background", "1": "CT", "2": "LE", "3": "IT"}


@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        ("tissue", {"mask": np.full((16, 16), 7, np.uint8)}, "not in the class map"),
        ("tissue", {"mask": np.zeros((8, 16), np.uint8)}, "differs from image shape"),
        ("tissue", {"mask": np.zeros((16, 16), np.uint8)}, "all background"),
        ("tissue", {"mask": np.ones((16, 16), np.float32)}, "integer ids"),
        ("tissue", {}, "needs a mask"),
        ("ct", {}, "needs a label"),
        ("ct", {"label": 9}, "label 9 is not in the class map"),
        ("stain", {}, "domain"),
        ("tissue", {"mask": np.ones((16, 16), np.uint8), "extra": {"x": object()}},
         "JSON"),
        ("tissue", {"mask": np.ones((16, 16), np.uint8), "item_id": "../evil"}, "safe"),
        ("tissue", {"mask": np.ones((16, 16), np.uint8), "split": "later"}, "split"),
    ],
)
def test_bad_items_raise_and_write_nothing(tmp_path, task, kwargs, message):
    writer = DatasetWriter(tmp_path / "ds", task, "HE", {0: "a", 1: "b"})
    before = _files(tmp_path / "ds")
    with pytest.raises(DatasetError, match=message):
        writer.add(_tile(0)[0], **kwargs)
    assert _files(tmp_path / "ds") == before
    assert len(Dataset.open(tmp_path / "ds")) == 0


def test_mixed_resolution_and_channels_rejected(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE)
    writer.add(*_tile(0), mpp=0.5)
    writer.add(*_tile(1), mpp=0.505)  # within 2 %
    with pytest.raises(DatasetError, match="mixed resolutions"):
        writer.add(*_tile(2), mpp=1.0)
    with pytest.raises(DatasetError, match="channels"):
        writer.add(_tile(3)[0][..., 0], _tile(3)[1])
    assert len(Dataset.open(tmp_path / "ds")) == 2


def test_same_source_region_replaces(tmp_path):
    source = tmp_path / "slide.svs"
    source.write_bytes(b"slide bytes")
    writer = DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE)
    first = writer.add(*_tile(0), source_path=source, offset=(0, 0))
    other = writer.add(*_tile(1), source_path=source, offset=(0, 16))
    image, mask = _tile(2)
    again = writer.add(image, mask, source_path=source, offset=(0, 0))
    ds = Dataset.open(tmp_path / "ds")
    assert again == first and [i.id for i in ds] == [first, other]
    np.testing.assert_array_equal(ds.read_mask(first), mask)
    assert ds.orphan_files() == []
    assert len(_files(tmp_path / "ds")) == 1 + 2 * 2
    assert ds.item(first).source["sha256"] == writer_module.sha256_file(source)


def test_extending_checks_the_header(tmp_path):
    DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE).add(*_tile(0))
    writer = DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE)
    assert writer.add(*_tile(1)) == "item_000001"
    assert len(Dataset.open(tmp_path / "ds")) == 2
    with pytest.raises(DatasetError, match="existing dataset"):
        DatasetWriter(tmp_path / "ds", "tissue", "HE", {0: "background", 1: "tumour"})
    with pytest.raises(DatasetError, match="already used"):
        writer.add(*_tile(2), item_id="item_000001")


def test_exception_mid_add_keeps_earlier_items(tmp_path, monkeypatch):
    writer = DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE)
    writer.add(*_tile(0))
    real = writer_module._write_tiff
    calls = []

    def failing(path, array):
        calls.append(path)
        if "masks" in str(path):
            raise OSError("disk full")
        real(path, array)

    monkeypatch.setattr(writer_module, "_write_tiff", failing)
    with pytest.raises(OSError, match="disk full"):
        writer.add(*_tile(1))
    ds = Dataset.open(tmp_path / "ds")
    assert [i.id for i in ds] == ["item_000000"]
    assert [p.name for p in ds.orphan_files()] == ["item_000001.tif"]
    assert not [p for p in (tmp_path / "ds").rglob(".*")]  # no temporary files left


def test_failed_replacement_keeps_the_old_item(tmp_path, monkeypatch):
    source = tmp_path / "slide.svs"
    source.write_bytes(b"x")
    writer = DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE)
    image, mask = _tile(0)
    item_id = writer.add(image, mask, source_path=source)
    real = writer_module._write_tiff

    def failing(path, array):
        if "masks" in str(path):
            raise KeyboardInterrupt
        real(path, array)

    monkeypatch.setattr(writer_module, "_write_tiff", failing)
    with pytest.raises(KeyboardInterrupt):
        writer.add(*_tile(1), source_path=source)
    ds = Dataset.open(tmp_path / "ds", check_pixels=True)
    np.testing.assert_array_equal(ds.read_image(item_id), image)
    np.testing.assert_array_equal(ds.read_mask(item_id), mask)


def test_flush_every_batches_manifest_writes(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", "tissue", "HE", TISSUE, flush_every=3)
    for seed in range(4):
        writer.add(*_tile(seed))
    assert len(Dataset.open(tmp_path / "ds")) == 3  # the 4th is not flushed yet
    assert len(writer.dataset()) == 4


def test_instance_masks_and_counts(tmp_path):
    labels = np.zeros((16, 16), np.int32)
    labels[2:6, 2:6] = 1
    labels[8:12, 8:14] = 300
    writer = DatasetWriter(tmp_path / "ds", "nuclei", "HE", {0: "background", 1: "nucleus"})
    item_id = writer.add(_tile(0)[0], labels)
    ds = Dataset.open(tmp_path / "ds")
    stored = ds.read_mask(item_id)
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, labels)
    assert ds.class_pixel_counts()[item_id] == {0: 256 - 16 - 24, 1: 40}
