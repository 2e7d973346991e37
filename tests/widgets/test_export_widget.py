"""The Export widget driven like a user: slide, MRI and CT exports, and GeoJSON both ways."""

import json

import numpy as np
import pytest

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.mri import write_lgg_patient
from napari_neuroseg.samples.slide import write_synthetic_slide
from napari_neuroseg.widgets._export_job import parse_class_text
from napari_neuroseg.widgets.export_widget import ExportWidget

pytestmark = pytest.mark.gui
PLUGIN = "napari-neuroseg"
TIMEOUT = 30000
CLASSES = {0: "background", 1: "CT", 2: "LE", 3: "IT"}


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer):
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    return write_synthetic_slide(path, size=(1024, 1024), tile=256, levels=3, mpp=0.5,
                                 compression="zlib", fast=True)


def _tissue_layer(viewer, slide, offset=(32, 64), shape=(96, 128), mpp=1.0):
    labels = np.zeros(shape, np.uint8)
    labels[10:40, 10:60] = 1
    labels[50:80, 30:90] = 2
    labels[85:, :] = 3
    t0 = (mpp - slide.scale[0]) / 2
    return viewer.add_labels(
        labels, name="corrected", scale=(mpp, mpp),
        translate=(t0 + offset[0] * mpp, t0 + offset[1] * mpp),
        features={"index": list(CLASSES), "class": list(CLASSES.values())})


def _points(geometry):
    polygons = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        polygons = [polygons]
    return [p for polygon in polygons for ring in polygon for p in ring]


def _click_and_wait(widget, qtbot, button, until):
    button.clicked.emit()
    qtbot.waitUntil(until, timeout=TIMEOUT)


def test_a_slide_region_is_exported_and_round_trips_through_geojson(viewer, widget, qtbot,
                                                                   slide_path, tmp_path):
    (slide_layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    from napari_neuroseg.io.layers import image_from_layer

    layer = _tissue_layer(viewer, image_from_layer(slide_layer))
    widget.labels_layer.value = layer
    assert widget.image_layer.value is slide_layer and widget.task.value == "tissue"
    assert parse_class_text(widget.classes.value) == CLASSES  # from the layer's features
    assert widget.slide_id.value == slide_layer.name and widget.corrected.value
    widget.folder.value = tmp_path / "ds"
    _click_and_wait(widget, qtbot, widget.export_button, lambda: widget.last_report is not None)
    assert "1 item(s) added, 0 replaced" in widget.status.value
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    widget.last_report = None
    _click_and_wait(widget, qtbot, widget.export_button, lambda: widget.last_report is not None)
    assert "0 item(s) added, 1 replaced" in widget.status.value
    ds = Dataset.open(tmp_path / "ds")
    (item,) = ds.items
    np.testing.assert_array_equal(ds.read_mask(item), layer.data)
    np.testing.assert_array_equal(ds.read_image(item),
                                  np.asarray(slide_layer.data[1][32:128, 64:192]))
    assert item.region["level"] == 1 and item.corrected_by_person

    widget.geojson_file.value = tmp_path / "regions.geojson"
    _click_and_wait(widget, qtbot, widget.geojson_export_button,
                    lambda: widget.status.value.startswith("Wrote"))
    data = json.loads((tmp_path / "regions.geojson").read_text())
    assert {f["properties"]["classification"]["name"] for f in data["features"]} == \
        {"CT", "LE", "IT"}
    points = np.array([p for f in data["features"] for p in _points(f["geometry"])])
    # level-0 pixels: the region starts at working pixel (32, 64), downsample 2
    assert points[:, 0].min() == 64 * 2 and points[:, 0].max() == (64 + 128) * 2
    assert points[:, 1].min() == 32 * 2 + 20 and points[:, 1].max() == (32 + 96) * 2
    _click_and_wait(widget, qtbot, widget.geojson_import_button,
                    lambda: widget.last_import is not None)
    imported = viewer.layers["regions (GeoJSON)"]
    np.testing.assert_array_equal(imported.data, layer.data)
    assert tuple(imported.translate) == tuple(layer.translate)
    assert widget.labels_layer.value is imported
    assert "Imported 3 feature(s)" in widget.status.value


def test_empty_tissue_labels_are_refused_and_nothing_is_written(viewer, widget, qtbot,
                                                               slide_path, tmp_path):
    (slide_layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    layer = viewer.add_labels(np.zeros((32, 32), np.uint8), name="empty",
                              scale=slide_layer.scale, translate=slide_layer.translate)
    widget.labels_layer.value = layer
    widget.classes.value = "0: background, 1: tumour"
    widget.folder.value = tmp_path / "ds"
    _click_and_wait(widget, qtbot, widget.export_button,
                    lambda: widget.status.value.startswith("Failed"))
    assert "all background" in widget.status.value
    assert not (tmp_path / "ds").exists()


def test_an_mri_patient_exports_every_slice_with_its_channels(viewer, widget, qtbot,
                                                              tmp_path):
    folder = write_lgg_patient(tmp_path / "lgg", patient_id="TCGA_XX_0001_20000101",
                               n_slices=5, size=32, seed=1)
    viewer.open(str(folder), plugin=PLUGIN)
    pid = folder.name
    widget.labels_layer.value = viewer.layers[f"{pid} FLAIR abnormality"]
    assert widget.task.value == "mri" and widget.patient_id.value == pid
    assert parse_class_text(widget.classes.value) == {0: "background",
                                                     1: "FLAIR abnormality"}
    widget.folder.value = tmp_path / "ds"
    _click_and_wait(widget, qtbot, widget.export_button, lambda: widget.last_report is not None)
    ds = Dataset.open(tmp_path / "ds")
    assert len(ds.items) == 5 and ds.modality == "MR"
    assert ds.read_image(ds.items[0]).shape == (32, 32, 3)
    assert {i.patient_id for i in ds.items} == {pid}


def test_a_ct_series_exports_patient_and_slice_labels(viewer, widget, qtbot, tmp_path):
    files = write_ct_series(tmp_path / "ct", n_slices=5, size=32, seed=0)
    (ct_layer,) = viewer.open(str(files[0].parent), plugin=PLUGIN)
    widget.image_layer.value = ct_layer
    assert widget.task.value == "ct" and not widget.positive_slices.native.isHidden()
    assert list(widget.positive_slices.choices) == [0, 1, 2, 3, 4]
    widget.patient_label.value = 1
    assert list(widget.positive_slices.value) == [0, 1, 2, 3, 4]  # default: the patient's
    widget.positive_slices.value = [2, 3]
    widget.patient_id.value = "P7"
    widget.folder.value = tmp_path / "ds"
    _click_and_wait(widget, qtbot, widget.export_button, lambda: widget.last_report is not None)
    ds = Dataset.open(tmp_path / "ds")
    assert [i.label for i in ds.items] == [0, 0, 1, 1, 0]
    assert ds.items[0].patient_id == "P7" and ds.items[0].extra["patient_label"] == 1


def test_close_disconnects_from_the_viewer(viewer, make_napari_viewer):
    w = ExportWidget(viewer)
    before = len(viewer.layers.events.inserted.callbacks)
    w.close()
    assert len(viewer.layers.events.inserted.callbacks) == before - 1


def _nuclei_result(viewer, slide_layer, stale_palette=False):
    """A Nuclei widget's result on the slide's level-0 grid: ids 1..13, one per nucleus."""
    labels = np.zeros((128, 128), np.uint32)
    for k in range(13):
        y, x = 8 + 9 * k, 10 + (k % 4) * 25
        labels[y:y + 6, x:x + 6] = k + 1
    meta = {"model": "nuclei-hovernet", "result_of": "Nuclei"}
    kwargs = {}
    if stale_palette:  # what an Annotate widget that recoloured it left behind
        names = ["background", "cellular tumour", "leading edge", "infiltrating tumour"]
        meta.update(classes=names, class_map={"names": names, "colors": ["#000000"] * 4,
                                              "kind": "semantic"})
        kwargs["features"] = {"index": [0, 1, 2, 3], "class": names}
    return viewer.add_labels(labels, name="nuclei-hovernet nuclei", scale=slide_layer.scale,
                             translate=slide_layer.translate, metadata={"neuroseg": meta},
                             **kwargs)


@pytest.mark.parametrize("stale_palette", [False, True])
def test_a_nuclei_result_exports_as_nuclei_instances(viewer, widget, qtbot, slide_path,
                                                     tmp_path, stale_palette):
    (slide_layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    layer = _nuclei_result(viewer, slide_layer, stale_palette)
    widget.labels_layer.value = layer
    assert widget.task.value == "nuclei"
    assert parse_class_text(widget.classes.value) == {0: "background", 1: "nucleus"}
    widget.folder.value = tmp_path / "ds"
    _click_and_wait(widget, qtbot, widget.export_button,
                    lambda: widget.last_report is not None or "Failed" in widget.status.value)
    assert widget.last_report is not None, widget.status.value
    ds = Dataset.open(tmp_path / "ds")
    (item,) = ds.items
    np.testing.assert_array_equal(np.unique(ds.read_mask(item)), np.arange(14))


def test_a_nuclei_result_is_not_exported_as_tissue(viewer, widget, qtbot, slide_path,
                                                  tmp_path):
    (slide_layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    widget.labels_layer.value = _nuclei_result(viewer, slide_layer)
    widget.task.value = "tissue"
    widget.folder.value = tmp_path / "ds"
    widget.export()
    assert "holds nucleus instances" in widget.status.value
    assert not (tmp_path / "ds").exists()


def test_a_tissue_result_exports_its_models_classes(viewer, widget, qtbot, slide_path):
    (slide_layer,) = viewer.open(str(slide_path), plugin=PLUGIN)
    widget.task.value = "nuclei"
    layer = viewer.add_labels(np.zeros((64, 64), np.uint8), name="tissue",
                              scale=slide_layer.scale, translate=slide_layer.translate,
                              metadata={"neuroseg": {"model": "gbm-tissue-8",
                                                     "result_of": "Analyse slide"}})
    assert widget.labels_layer.value is layer  # the only labels layer: chosen when added
    assert widget.task.value == "tissue"
    classes = ModelRegistry().get("gbm-tissue-8").classes  # 8 classes, not LGG's 4
    assert parse_class_text(widget.classes.value) == dict(enumerate(classes))
