"""Export to the dataset layout: slides, MRI, CT, nuclei; validation, idempotence, crashes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.annotate.export import ExportItem, export_items
from napari_neuroseg.annotate.export_plan import (
    label_store_items,
    nuclei_tile_items,
    slide_items,
    slide_region,
    volume_items,
)
from napari_neuroseg.dataset import Dataset, DatasetError
from napari_neuroseg.dataset.manifest import sha256_file
from napari_neuroseg.engine import Region, ResampledArray
from napari_neuroseg.io import LazyImage, open_image
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.mri import write_lgg_patient
from napari_neuroseg.samples.slide import write_synthetic_slide

from .conftest import slide_geometry, tissue_labels

CLASSES = {0: "background", 1: "CT", 2: "LE", 3: "IT"}
MRI_CLASSES = {0: "background", 1: "FLAIR abnormality"}
REPO = Path(__file__).resolve().parents[2]


def test_a_slide_region_at_a_pyramid_level_is_exported_with_its_provenance(slide, tmp_path):
    scale, translate = slide_geometry(slide, 1.0, (32, 64))
    region = slide_region(slide, scale, translate)
    assert (region.level, region.factor, region.offset, region.downsample) == (1, 1.0,
                                                                                (32, 64), 2.0)
    labels = tissue_labels((96, 128))
    report = export_items(slide_items(slide, labels, region, slide_id="S1", patient_id="P1"),
                          tmp_path / "ds", "tissue", CLASSES)
    assert (report.added, report.replaced) == (1, 0)
    ds = Dataset.open(tmp_path / "ds")
    (item,) = ds.items
    assert ds.task == "tissue" and ds.modality == "HE" and ds.class_map == CLASSES
    expected = np.asarray(slide.levels[1][32:128, 64:192])
    np.testing.assert_array_equal(ds.read_image(item), expected)
    np.testing.assert_array_equal(ds.read_mask(item), labels)
    assert item.region["level"] == 1 and item.region["offset"] == [32, 64]
    assert item.region["size"] == [96, 128] and item.region["mpp"] == 1.0
    assert item.source == {"path": slide.source, "sha256": sha256_file(slide.source)}
    assert item.corrected_by_person and item.created.endswith("Z")
    assert (item.slide_id, item.patient_id, item.extra["downsample"]) == ("S1", "P1", 2.0)


def test_a_grid_between_levels_is_resampled_like_the_engine(slide, tmp_path):
    scale, translate = slide_geometry(slide, 0.75, (10, 20))
    region = slide_region(slide, scale, translate)
    assert region.level == 0 and region.factor == pytest.approx(1.5)
    labels = tissue_labels((64, 80))
    export_items(slide_items(slide, labels, region), tmp_path / "ds", "tissue", CLASSES)
    ds = Dataset.open(tmp_path / "ds")
    image = ds.read_image(ds.items[0])
    expected = ResampledArray(slide.levels[0], 1.5)[10:74, 20:100]
    assert image.dtype == np.uint8 and image.shape == (64, 80, 3)
    assert np.abs(image.astype(float) - expected).max() <= 0.5
    assert ds.items[0].region["mpp"] == pytest.approx(0.75)
    assert ds.items[0].extra["resampled"] is True


def test_exporting_the_same_region_twice_keeps_one_item(slide, tmp_path):
    region = slide_region(slide, *slide_geometry(slide, 1.0, (0, 0)))
    labels = tissue_labels((64, 64))
    first = export_items(slide_items(slide, labels, region), tmp_path / "ds", "tissue",
                         CLASSES)
    corrected = labels.copy()
    corrected[:5, :5] = 2
    second = export_items(slide_items(slide, corrected, region), tmp_path / "ds", "tissue",
                          CLASSES)
    assert (second.added, second.replaced) == (0, 1) and second.item_ids == first.item_ids
    other = slide_region(slide, *slide_geometry(slide, 1.0, (64, 0)))
    third = export_items(slide_items(slide, labels, other), tmp_path / "ds", "tissue",
                         CLASSES)
    assert (third.added, third.replaced) == (1, 0)
    ds = Dataset.open(tmp_path / "ds")
    assert len(ds.items) == 2 and ds.orphan_files() == []
    np.testing.assert_array_equal(ds.read_mask(first.item_ids[0]), corrected)


def _snapshot(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes())
                  for p in Path(folder).rglob("*") if p.is_file())


def test_validation_errors_write_nothing(slide, tmp_path):
    region = slide_region(slide, *slide_geometry(slide, 1.0, (0, 0)))
    new = tmp_path / "new"
    cases = [
        (slide_items(slide, np.zeros((32, 32), np.uint8), region), "tissue",
         "all background"),
        (slide_items(slide, np.full((32, 32), 7, np.uint8), region), "tissue",
         r"class ids \[7\]"),
        (slide_items(slide, tissue_labels((64, 64)), region), "segmentation",
         "unknown export task"),
    ]
    for items, task, message in cases:
        with pytest.raises(DatasetError, match=message):
            export_items(items, new, task, CLASSES)
        assert not new.exists()
    good = slide_items(slide, tissue_labels((64, 64)), region)
    bad_shape = ExportItem(lambda: np.zeros((10, 10, 3), np.uint8), (10, 10, 3),
                           np.dtype(np.uint8), np.ones((10, 12), np.uint8), where="tile 2")
    with pytest.raises(DatasetError, match=r"tile 2: mask shape \(10, 12\) differs"):
        export_items([*good, bad_shape], new, "tissue", CLASSES)
    assert not new.exists()
    # an existing dataset at 1 µm/px: a 2 µm/px region (level 2) is refused, nothing changes
    export_items(good, tmp_path / "ds", "tissue", CLASSES)
    before = _snapshot(tmp_path / "ds")
    coarse = slide_region(slide, *slide_geometry(slide, 2.0, (0, 0)))
    with pytest.raises(DatasetError, match="mixed resolutions"):
        export_items(slide_items(slide, tissue_labels((64, 64)), coarse), tmp_path / "ds",
                     "tissue", CLASSES)
    with pytest.raises(DatasetError, match="holds task 'tissue'"):
        export_items(good, tmp_path / "ds", "tissue", {0: "background", 1: "tumour"})
    assert _snapshot(tmp_path / "ds") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"not empty and holds no manifest\.json"):
        export_items(good, tmp_path / "other", "tissue", CLASSES)


def test_an_export_interrupted_midway_leaves_a_valid_dataset(slide, tmp_path, monkeypatch):
    import napari_neuroseg.dataset.writer as writer_module

    items = []
    for k in range(5):
        region = slide_region(slide, *slide_geometry(slide, 1.0, (0, 64 * k)))
        items += slide_items(slide, tissue_labels((64, 64)), region)
    real, calls = writer_module._write_tiff, []

    def failing(path, array):
        calls.append(path)
        if len(calls) == 6:  # the third item's mask
            raise OSError("disk full")
        real(path, array)

    monkeypatch.setattr(writer_module, "_write_tiff", failing)
    with pytest.raises(OSError, match="disk full"):
        export_items(items, tmp_path / "ds", "tissue", CLASSES)
    ds = Dataset.open(tmp_path / "ds")  # pixels checked too
    assert len(ds.items) == 2
    assert [p.name for p in ds.orphan_files()] == [calls[4].name]  # the lone image
    monkeypatch.setattr(writer_module, "_write_tiff", real)
    report = export_items(items, tmp_path / "ds", "tissue", CLASSES)  # resuming completes it
    assert (report.added, report.replaced) == (3, 2)
    assert len(Dataset.open(tmp_path / "ds").items) == 5


KILL_SCRIPT = """
import sys, time
import numpy as np
import napari_neuroseg.dataset.writer as w
from napari_neuroseg.annotate.export import export_items
from napari_neuroseg.annotate.export_plan import volume_items
from napari_neuroseg.io import open_image
real = w._write_tiff
def slow(path, array):
    real(path, array)
    time.sleep(0.15)
w._write_tiff = slow
image, labels = open_image(sys.argv[1])
items = volume_items(image, task="mri", labels=np.asarray(labels.levels[0]))
export_items(items, sys.argv[2], "mri", {0: "background", 1: "FLAIR abnormality"})
"""


def test_killing_an_export_process_leaves_only_complete_items(tmp_path):
    folder = write_lgg_patient(tmp_path / "lgg", patient_id="TCGA_XX_0009_20000101",
                               n_slices=30, size=32, seed=2)
    dst = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder), str(dst)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            manifest = dst / "manifest.json"
            if manifest.is_file() and len(json.loads(manifest.read_text())["items"]) >= 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    ds = Dataset.open(dst)  # every listed item's image and mask decode
    assert 3 <= len(ds.items) < 30
    assert [item.slice_index for item in ds.items] == list(range(1, len(ds.items) + 1))  # numbers
    for item in ds.items:
        assert ds.read_image(item).shape == (32, 32, 3)


@pytest.fixture(scope="module")
def lgg_patients(tmp_path_factory):
    root = tmp_path_factory.mktemp("lgg")
    return [write_lgg_patient(root, patient_id=f"TCGA_XX_{n:04d}_20000101", n_slices=6,
                              size=64, seed=n) for n in range(3)]


def test_mri_volumes_export_one_item_per_slice_and_train(lgg_patients, tmp_path, capsys):
    from training.cli import main

    dst = tmp_path / "mri"
    for folder in lgg_patients:
        image, labels = open_image(folder)
        mask = np.asarray(labels.levels[0])
        report = export_items(volume_items(image, task="mri", labels=mask), dst, "mri",
                              MRI_CLASSES)
        assert report.added == 6
    ds = Dataset.open(dst)
    assert ds.modality == "MR" and len(ds.items) == 18 and len(ds.patients()) == 3
    empty = [i for i in ds.items if not ds.read_mask(i).any()]
    assert empty  # lesion-free slices are kept as negatives
    first = ds.items[0]
    assert first.patient_id == "TCGA_XX_0000_20000101" and first.slice_index == 1  # its number
    assert first.region["spacing_mm"] == [1.0, 1.0, 1.0]
    assert first.source["path"].endswith("TCGA_XX_0000_20000101_1.tif")
    again = export_items(volume_items(image, task="mri", labels=mask), dst, "mri", MRI_CLASSES)
    assert (again.added, again.replaced) == (0, 6)
    config = tmp_path / "tiny.yaml"
    config.write_text("base_features: 4\nbatch_size: 4\naugment: false\nnum_workers: 0\n")
    run = tmp_path / "run"
    code = main(["mri", "--data", str(dst), "--out", str(run), "--epochs", "1", "--device",
                 "cpu", "--config", str(config), "--seed", "0"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["slice_dice"] <= 1.0 and metrics["val_patients"] >= 1


def test_ct_series_exports_slice_labels_with_the_patient_label(tmp_path):
    files = write_ct_series(tmp_path / "ct", n_slices=6, size=32, seed=1)
    (image,) = open_image(files[0].parent)
    with pytest.raises(DatasetError, match="label at least one slice"):
        volume_items(image, task="ct", slice_labels=[0] * 6, patient_label=1)
    with pytest.raises(DatasetError, match="one label per slice"):
        volume_items(image, task="ct", slice_labels=[1, 0])
    items = volume_items(image, task="ct", slice_labels=[0, 0, 1, 1, 0, 0], patient_label=1,
                         patient_id="patient_007")
    report = export_items(items, tmp_path / "ds", "ct", {0: "no metastasis", 1: "metastasis"})
    assert report.added == 6
    ds = Dataset.open(tmp_path / "ds")
    assert [i.label for i in ds.items] == [0, 0, 1, 1, 0, 0]
    assert {i.patient_id for i in ds.items} == {"patient_007"}
    assert ds.items[0].extra["patient_label"] == 1
    hu = ds.read_image(ds.items[2])
    assert hu.dtype == np.int16 and hu.min() < -500  # air in HU
    np.testing.assert_array_equal(hu, np.asarray(image.levels[0][2]).astype(np.int16))
    assert len({i.source["path"] for i in ds.items}) == 6  # each slice's own DICOM file
    assert ds.items[0].region["spacing_mm"] == [float(v) for v in image.scale]


def test_nuclei_instances_and_derived_tile_labels(slide, tmp_path):
    region = slide_region(slide, *slide_geometry(slide, 0.5, (0, 0)))
    labels = np.zeros((512, 256), np.int32)
    for k, (y, x) in enumerate([(40, 40), (60, 200), (300, 100)], start=1):
        labels[y - 6:y + 6, x - 6:x + 6] = k
    (item,) = slide_items(slide, labels, region, task="nuclei")
    export_items([item], tmp_path / "nuclei", "nuclei", {0: "background", 1: "nucleus"})
    ds = Dataset.open(tmp_path / "nuclei")
    np.testing.assert_array_equal(ds.read_mask(ds.items[0]), labels)
    assert ds.items[0].extra["n_nuclei"] == 3
    tiles = nuclei_tile_items(item, tile_size=128)
    assert len(tiles) == 8 and [t.label for t in tiles] == [1, 1, 0, 0, 1, 0, 0, 0]
    export_items(tiles, tmp_path / "tiles", "nuclei-tiles", {0: "NO_NUCLEUS", 1: "NUCLEI"})
    tds = Dataset.open(tmp_path / "tiles")
    assert len(tds.items) == 8 and tds.items[4].region["offset"] == [256, 0]
    np.testing.assert_array_equal(tds.read_image(tds.items[4]),
                                  np.asarray(slide.levels[0][256:384, 0:128]))


def test_in_memory_images_dedupe_on_their_pixels_and_stop_early(tmp_path):
    volume = da.from_array(np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3),
                                                               dtype=np.uint8))
    image = LazyImage([volume], "zyxc", (2.0, 1.0, 1.0), "mm", "stack", "MR", "stack")
    labels = np.zeros((4, 16, 16), np.uint8)
    items = volume_items(image, task="mri", labels=labels, patient_id="P")
    seen: list = []
    stopped = export_items(items, tmp_path / "ds", "mri", MRI_CLASSES,
                           should_stop=lambda: len(seen) >= 2,
                           on_progress=lambda done, total: seen.append((done, total)))
    assert stopped.stopped and stopped.added == 2 and seen == [(1, 4), (2, 4)]
    report = export_items(items, tmp_path / "ds", "mri", MRI_CLASSES)
    assert (report.added, report.replaced) == (2, 2)
    ds = Dataset.open(tmp_path / "ds")
    assert ds.items[0].extra["source_hash"] == "pixels" and ds.items[0].source["path"] is None


class _FakeStore:
    """What label_store_items needs of annotate.labelstore.LabelStore."""

    def __init__(self, image, labels):
        from dataclasses import make_dataclass

        self.scale, self.translate = slide_geometry(image, 1.0, (0, 0))
        self.labels = labels
        record = make_dataclass("R", ["region", "corrected_by_person"])
        self._regions = [record(Region(0, 0, 32, 32), True), record(Region(64, 64, 96, 128),
                                                                    False)]

    def regions(self):
        return self._regions

    def read(self, region):
        return self.labels[region.slices]


def test_label_store_regions_export_with_their_own_flags(slide, tmp_path):
    labels = np.zeros((512, 512), np.uint8)
    labels[:20, :20] = 1
    labels[70:90, 70:120] = 2
    items = label_store_items(slide, _FakeStore(slide, labels))
    export_items(items, tmp_path / "ds", "tissue", CLASSES)
    ds = Dataset.open(tmp_path / "ds")
    assert [i.corrected_by_person for i in ds.items] == [True, False]
    assert ds.items[1].region["offset"] == [64, 64] and ds.items[1].region["size"] == [32, 64]
    assert len(label_store_items(slide, _FakeStore(slide, labels), only_corrected=True)) == 1


def test_a_label_store_exports_each_committed_region_once(tmp_path):
    """The Annotate widget's store feeds the export directly (no fake store)."""
    from napari_neuroseg.annotate.labelstore import LabelStore
    from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS
    from napari_neuroseg.annotate.slidegrid import slide_grid
    from napari_neuroseg.dataset import Dataset
    from napari_neuroseg.engine import Region
    from napari_neuroseg.io import open_image

    slide = write_synthetic_slide(tmp_path / "s.tif", size=(1024, 1024), mpp=0.5)
    image = open_image(slide)[0]
    class_map = next(m for m in STANDARD_CLASS_MAPS.values() if len(m.names) == 4)
    grid = slide_grid(image, 1.0)
    store = LabelStore.create(tmp_path / "store", grid.shape, class_map, scale=grid.scale,
                              translate=grid.translate, level=grid.level, mpp=grid.mpp,
                              source={"path": str(slide)})
    labels = np.zeros((64, 96), np.uint8)
    labels[:, :24], labels[:, 24:48], labels[:, 48:72], labels[:, 72:] = 0, 1, 2, 3
    for y0 in (0, 128):
        store.commit(Region(y0, 32, y0 + 64, 128), labels)
    store.commit(Region(0, 32, 64, 128), labels)  # the same region again: one item
    items = label_store_items(image, LabelStore.open(tmp_path / "store"), task="tissue")
    report = export_items(items, tmp_path / "ds", "tissue", class_map.class_map(),
                          modality="HE")
    data = Dataset.open(tmp_path / "ds")
    assert report.added == 2 and len(data.items) == 2
    item = data.items[0]
    assert item.corrected_by_person and item.region["size"] == [64, 96]
    assert np.array_equal(data.read_mask(item), labels)
    assert data.read_image(item).shape == (64, 96, 3)
    # the Export widget's worker takes the store's path, as its layer metadata gives it
    from napari_neuroseg.widgets._export_job import run_export

    again = run_export(image, str(tmp_path / "store"), None, None, "tissue",
                       class_map.class_map(), str(tmp_path / "ds"), {"slide_id": "S"})
    assert again.added == 0 and again.replaced == 2
    assert len(Dataset.open(tmp_path / "ds").items) == 2
