"""The Annotate widget driven like a user: edit a slide region, paint, commit, close; palette
and nuclei tools."""

import numpy as np
import pytest

from napari_neuroseg.annotate import labelstore
from napari_neuroseg.annotate.labelstore import LabelStore
from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS
from napari_neuroseg.engine import Region
from napari_neuroseg.live.viewport import Box, box_to_pixels
from napari_neuroseg.widgets import _annotate_slide
from napari_neuroseg.widgets.annotate_widget import AnnotateWidget

from .conftest import add_slide, write_slide

pytestmark = pytest.mark.gui
LGG = "LGG tissue (4 classes)"
WORK = STANDARD_CLASS_MAPS[LGG].resolution  # its µm/px: the declared lgg-tissue model's
SLIDE_MPP = WORK / 2  # the slide's level 1 is the working grid, read as it is (no resampling)


def _um(*pixels):
    """Lengths of working pixels in µm (the slide's world units)."""
    return tuple(WORK * p for p in pixels)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("annot"), mpp=SLIDE_MPP)


@pytest.fixture
def fast_autosave(monkeypatch):
    monkeypatch.setattr(_annotate_slide, "AUTOSAVE_MS", 50)


def _slide_widget(make_napari_viewer, slide_path, store_dir):
    viewer = make_napari_viewer()
    slide = add_slide(viewer, slide_path)
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.value = slide
    widget.class_map.value = LGG
    widget.slide.folder.value = str(store_dir)
    return viewer, widget


def _rectangle(viewer, y0, x0, y1, x1):
    shapes = viewer.add_shapes([[[y0, x0], [y0, x1], [y1, x1], [y1, x0]]],
                               shape_type="rectangle", name="region")
    viewer.layers.selection.active = shapes
    return shapes


def _open_region(qtbot, widget, seed=True):
    widget.slide.edit_region(seed=seed)
    qtbot.waitUntil(lambda: widget.slide.edit_layer is not None, timeout=20000)
    return widget.slide.edit_layer


def test_edit_paint_commit_close(make_napari_viewer, qtbot, slide_path, tmp_path):
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    _rectangle(viewer, *_um(100.0, 200.0, 300.0, 500.0))
    layer = _open_region(qtbot, widget)
    store = widget.slide.store
    assert store.shape == (512, 768) and store.mpp == WORK and store.level == 1
    region = box_to_pixels(Box(*_um(100.0, 200.0, 300.0, 500.0)), store.scale, store.translate,
                           store.shape)
    assert layer.data.shape == region.shape and not layer.data.any()
    # painting: a 20 x 30 block of "leading edge", as a brush stroke records it
    widget.labels.value = layer
    widget.paint_class.value = "leading edge"
    assert layer.selected_label == 2
    ys, xs = np.mgrid[40:60, 50:80]
    layer.data_setitem((ys.ravel(), xs.ravel()), layer.selected_label)
    widget.slide.commit_button.clicked()
    qtbot.waitUntil(lambda: widget.slide.commits == 1, timeout=10000)
    # the store layer shows it at the same world position, at level 0 and level 1
    shown = widget.slide.store_layer
    assert shown is not None and shown.multiscale
    world = np.asarray(layer.data_to_world((45, 55)))
    index = np.round(shown.world_to_data(world)).astype(int)
    assert np.asarray(shown.data[0])[tuple(index)] == 2
    assert index.tolist() == [region.y0 + 45, region.x0 + 55]
    level1 = np.asarray(shown.data[1])
    assert level1[(region.y0 + 46) // 2, (region.x0 + 56) // 2] == 2
    # a stroke undone after the commit, more painting, then the widget closes before the
    # autosave timer fires
    layer.data_setitem((np.arange(40, 45), np.arange(50, 55)), 1)
    layer.undo()
    layer.data_setitem((np.arange(100, 110), np.arange(100, 110)), 3)
    assert widget.slide.saver.edit.dirty
    widget.close()
    again = LabelStore.open(tmp_path / "store")
    got = again.read(region)
    assert (got[40:60, 50:80] == 2).all()
    assert (got[np.arange(100, 110), np.arange(100, 110)] == 3).all()
    assert got.sum() == 20 * 30 * 2 + 10 * 3
    assert [r.region for r in again.regions()] == [region]
    assert again.regions()[0].corrected_by_person
    # "after a restart": a new widget shows the corrections and reopens the region as it was
    for name in [layer.name for layer in viewer.layers if layer.name != "s"]:
        if name != "region":
            viewer.layers.remove(name)
    widget = AnnotateWidget(viewer)
    widget.image.value = viewer.layers["s"]
    widget.class_map.value = LGG
    widget.slide.folder.value = str(tmp_path / "store")
    widget.slide.show_button.clicked()
    qtbot.waitUntil(lambda: widget.slide.store_layer is not None, timeout=10000)
    assert np.asarray(widget.slide.store_layer.data[0])[region.y0 + 45, region.x0 + 55] == 2
    viewer.layers.selection.active = viewer.layers["region"]
    np.testing.assert_array_equal(_open_region(qtbot, widget).data, got)
    widget.close()


def test_autosave_after_painting_and_on_viewer_close(make_napari_viewer, qtbot, slide_path,
                                                     tmp_path, fast_autosave):
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    camera = viewer.scene.camera  # the view: 200 working px across, centred at (250, 600)
    camera.zoom = viewer.canvas.size[1] / _um(200.0)[0]
    camera.center = (0.0, *_um(250.0, 600.0)) if len(camera.center) == 3 else _um(250.0, 600.0)
    layer = _open_region(qtbot, widget)
    region = widget.slide.saver.edit.region
    assert abs(region.shape[1] - 200) <= 2
    assert abs((region.y0 + region.y1) / 2 - 250) <= 2
    data = layer.data.copy()
    data[:10, :10] = 1
    layer.data = data  # a programmatic edit (data event)
    qtbot.waitUntil(lambda: widget.slide.commits == 1, timeout=10000)
    assert (LabelStore.open(tmp_path / "store").read(region)[:10, :10] == 1).all()
    # opening another region commits the first one's last strokes (in a worker)
    layer.data_setitem((np.array([15]), np.array([15])), 2)
    widget.slide.autosave.value = False
    _rectangle(viewer, *_um(10.0, 10.0, 50.0, 50.0))
    second = _open_region(qtbot, widget)
    assert second is not layer and layer not in viewer.layers
    qtbot.waitUntil(lambda: widget.slide.commits == 2, timeout=10000)
    assert (LabelStore.open(tmp_path / "store").read(region)[15, 15]) == 2
    second.data_setitem((np.array([20]), np.array([20])), 3)
    viewer.layers.clear()  # what napari does first when the viewer closes
    got = LabelStore.open(tmp_path / "store").read(widget.slide.store.regions()[-1].region)
    assert got[20, 20] == 3 and got.sum() == 3


def test_edit_region_seeded_from_a_result_layer(make_napari_viewer, qtbot, slide_path,
                                                tmp_path):
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    result = np.zeros((1024, 1536), np.uint8)  # a result on the level-0 grid
    result[200:600, 400:1000] = 1
    seed = viewer.add_labels(result, scale=(SLIDE_MPP, SLIDE_MPP), name="model labels",
                             units="um")
    widget.slide.seed.value = seed
    _rectangle(viewer, *_um(50.0, 150.0, 350.0, 550.0))
    layer = _open_region(qtbot, widget)
    store, region = widget.slide.store, widget.slide.saver.edit.region
    # a working pixel is labelled as the level-0 pixel under its centre
    centres_y = store.translate[0] + np.arange(region.y0, region.y1) * store.scale[0]
    centres_x = store.translate[1] + np.arange(region.x0, region.x1) * store.scale[1]
    expected = result[np.floor(centres_y / SLIDE_MPP + 0.5).astype(int)[:, None],
                      np.floor(centres_x / SLIDE_MPP + 0.5).astype(int)[None, :]]
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.data.any() and not layer.data.all()


def test_palette_and_new_layer_on_a_volume(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    volume = viewer.add_image(np.zeros((5, 32, 48), np.float32), scale=(3.0, 0.5, 0.5),
                              name="flair", metadata={"neuroseg": {"modality": "MR"}})
    widget = AnnotateWidget(viewer)
    widget.image.value = volume
    widget.class_map.value = "MRI FLAIR abnormality"
    layer = widget.new_layer()
    assert layer.data.shape == (5, 32, 48) and layer.data.dtype == np.uint8
    assert tuple(layer.scale) == (3.0, 0.5, 0.5)
    assert widget.labels.value is layer and layer.selected_label == 1
    assert list(layer.features["class"]) == ["background", "FLAIR abnormality"]
    assert tuple(layer.colormap.map(np.array([1]))[0][:3]) == pytest.approx((1.0, 0.843, 0.0),
                                                                           abs=0.01)
    # the palette renames and recolours any labels layer, and picks labels by class name
    widget.class_map.value = LGG
    widget.paint_class.value = "infiltrating tumour"
    assert layer.selected_label == 3
    assert list(layer.features["class"])[3] == "infiltrating tumour"
    widget.paint_class.value = "background"
    assert layer.selected_label == 0


def test_nuclei_tools(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 60), np.uint32)
    labels[2:8, 2:8] = 3
    labels[2:8, 12:18] = 7
    yy, xx = np.mgrid[:40, :60]
    labels[((yy - 25) ** 2 + (xx - 20) ** 2 <= 36) | ((yy - 25) ** 2 + (xx - 31) ** 2 <= 36)] = 9
    layer = viewer.add_labels(labels, name="nuclei")
    widget = AnnotateWidget(viewer)
    widget.labels.value = layer
    widget.class_map.value = "nuclei (instances)"
    tools = widget.instances

    def ids():
        return sorted(int(i) for i in np.unique(layer.data) if i)

    tools.ids.value = "3, 7"
    tools.merge_button.clicked()
    qtbot.waitUntil(lambda: ids() == [3, 9], timeout=10000)
    tools.ids.value = ""
    layer.selected_label = 3
    tools.delete_button.clicked()
    qtbot.waitUntil(lambda: ids() == [9], timeout=10000)
    line = viewer.add_shapes([[[20.0, 25.4], [30.0, 25.4]]], shape_type="line", name="cut")
    tools.line_layer.value = line
    tools.split_line_button.clicked()
    qtbot.waitUntil(lambda: ids() == [9, 10], timeout=10000)
    tools.ids.value = "10"
    tools.split_watershed_button.clicked()
    qtbot.waitUntil(lambda: ids() == [9, 10, 11], timeout=10000)
    tools.add_button.clicked()
    qtbot.waitUntil(lambda: layer.selected_label == 12, timeout=10000)
    assert layer.mode == "paint"
    widget.paint_class.value = "nucleus"  # the palette of an instance map: a new id too
    assert layer.selected_label == 12


def test_new_layer_on_a_slide_is_an_edit_region(make_napari_viewer, qtbot, slide_path,
                                                tmp_path):
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    _rectangle(viewer, *_um(0.0, 0.0, 64.0, 64.0))
    widget.new_button.clicked()
    qtbot.waitUntil(lambda: widget.slide.edit_layer is not None, timeout=20000)
    assert widget.slide.edit_layer.data.shape[0] in (64, 65)


def test_a_one_level_store_from_before_is_shown(make_napari_viewer, qtbot, slide_path,
                                                 tmp_path, monkeypatch):
    """A store saved with a single level (a small grid, before stores kept two): napari cannot
    build a one-level multiscale labels layer, so the layer gets a strided second level."""
    monkeypatch.setattr(labelstore, "pyramid_shapes", lambda shape, chunk, min_side: [shape])
    _viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    widget.slide.show_button.clicked()
    qtbot.waitUntil(lambda: widget.slide.store_layer is not None, timeout=10000)
    store, shown = widget.slide.store, widget.slide.store_layer
    assert store.n_levels == 1 and shown.multiscale and len(shown.data) == 2
    assert shown.data[0].shape == store.shape == (512, 768) and shown.data[1].shape == (256, 384)
    store.commit(Region(0, 0, 4, 4), np.full((4, 4), 2, np.uint8))
    assert np.asarray(shown.data[1][:2, :2]).tolist() == [[2, 2], [2, 2]]


def _autosaved_stroke(make_napari_viewer, qtbot, slide_path, store):
    """An edit region with one stroke (5, 6) = 2, autosaved: ``(widget, layer, region)``."""
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, store)
    _rectangle(viewer, *_um(0.0, 0.0, 40.0, 40.0))
    layer = _open_region(qtbot, widget)
    region = widget.slide.saver.edit.region
    layer.data_setitem((np.array([5]), np.array([6])), 2)
    qtbot.waitUntil(lambda: widget.slide.commits == 1, timeout=10000)
    return widget, layer, region


def test_an_undo_after_the_autosave_is_saved_on_close(make_napari_viewer, qtbot, slide_path,
                                                      tmp_path, fast_autosave):
    widget, layer, region = _autosaved_stroke(make_napari_viewer, qtbot, slide_path,
                                              tmp_path / "store")
    layer.undo()  # napari sends no paint event for an undo
    assert not widget.slide.saver.edit.dirty
    widget.close()
    assert not LabelStore.open(tmp_path / "store").read(region).any()


def _two_nuclei_layer(viewer):
    labels = np.zeros((40, 60), np.uint32)
    labels[2:8, 2:8] = 3
    labels[2:8, 12:18] = 7
    return viewer.add_labels(labels, name="nuclei")


def _nuclei_widget(make_napari_viewer):
    """The two-nuclei layer, chosen in an Annotate widget with the nuclei class map."""
    viewer = make_napari_viewer()
    layer = _two_nuclei_layer(viewer)
    widget = AnnotateWidget(viewer)
    widget.labels.value = layer
    widget.class_map.value = "nuclei (instances)"
    return layer, widget


def test_a_merge_is_one_undo_step_and_keeps_the_paint_history(make_napari_viewer, qtbot):
    layer, widget = _nuclei_widget(make_napari_viewer)
    layer.data_setitem((np.arange(20, 25), np.arange(30, 35)), 5)  # a paint stroke first
    painted = layer.data.copy()
    widget.instances.ids.value = "3, 7"
    widget.instances.merge_button.clicked()
    qtbot.waitUntil(lambda: not (layer.data == 7).any(), timeout=10000)
    merged = layer.data.copy()
    assert (merged[2:8, 12:18] == 3).all() and "Ctrl+Z" in widget.status.value
    layer.undo()  # Ctrl+Z: the merge only
    np.testing.assert_array_equal(layer.data, painted)
    layer.redo()  # Ctrl+Shift+Z
    np.testing.assert_array_equal(layer.data, merged)
    layer.undo()
    layer.undo()  # the stroke before the merge is still in the history
    assert not (layer.data == 5).any() and (layer.data[2:8, 12:18] == 7).all()


def test_a_split_keeps_what_was_painted_while_it_ran(make_napari_viewer, qtbot):
    layer, widget = _nuclei_widget(make_napari_viewer)
    widget.instances.ids.value = "3"
    widget.instances.delete_button.clicked()
    layer.data_setitem((np.array([4]), np.array([4])), 9)  # painted before the worker ends
    qtbot.waitUntil(lambda: not (layer.data == 3).any(), timeout=10000)
    assert layer.data[4, 4] == 9 and (layer.data == 9).sum() == 1
    layer.undo()  # the deletion
    assert (layer.data[2:8, 2:8] == 3).sum() == 35 and layer.data[4, 4] == 9


def test_an_undo_inside_an_edit_region_is_autosaved(make_napari_viewer, qtbot, slide_path,
                                                    tmp_path, fast_autosave):
    widget, layer, region = _autosaved_stroke(make_napari_viewer, qtbot, slide_path,
                                              tmp_path / "store")
    assert LabelStore.open(tmp_path / "store").read(region)[5, 6] == 2
    layer.undo()  # no paint event: only a refresh
    qtbot.waitUntil(lambda: widget.slide.commits == 2, timeout=10000)
    assert not LabelStore.open(tmp_path / "store").read(region).any()
    layer.redo()
    qtbot.waitUntil(lambda: widget.slide.commits == 3, timeout=10000)
    assert LabelStore.open(tmp_path / "store").read(region)[5, 6] == 2
    widget.close()


def test_nuclei_tools_in_an_edit_region_are_undoable_and_autosaved(
        make_napari_viewer, qtbot, slide_path, tmp_path, fast_autosave):
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    widget.class_map.value = "nuclei (instances)"
    _rectangle(viewer, *_um(0.0, 0.0, 40.0, 40.0))
    layer = _open_region(qtbot, widget)
    region = widget.slide.saver.edit.region
    widget.labels.value = layer
    ys, xs = np.mgrid[2:6, 2:6]
    layer.data_setitem((ys.ravel(), xs.ravel()), 4)
    qtbot.waitUntil(lambda: widget.slide.commits == 1, timeout=10000)
    widget.instances.ids.value = "4"
    widget.instances.delete_button.clicked()
    qtbot.waitUntil(lambda: widget.slide.commits == 2, timeout=10000)
    assert not LabelStore.open(tmp_path / "store").read(region).any()
    layer.undo()
    qtbot.waitUntil(lambda: widget.slide.commits == 3, timeout=10000)
    assert (LabelStore.open(tmp_path / "store").read(region)[2:6, 2:6] == 4).all()
    widget.close()


def _nuclei_result(viewer):
    labels = np.zeros((60, 60), np.uint32)
    for k in range(13):
        labels[4 * k:4 * k + 3, 5:9 + k] = k + 1
    features = {"index": np.arange(14), "class": ["background"] + ["nucleus"] * 13}
    return viewer.add_labels(labels, name="nuclei-hovernet nuclei", features=features,
                             metadata={"neuroseg": {"model": "nuclei-hovernet",
                                                    "result_of": "Nuclei"}})


def test_docking_over_a_nuclei_result_keeps_its_colours(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = _nuclei_result(viewer)
    ids = np.arange(14)
    colours = layer.colormap.map(ids).copy()
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.labels.value is layer and widget.class_map.value == "nuclei (instances)"
    np.testing.assert_allclose(layer.colormap.map(ids), colours)
    assert list(layer.features["class"]) == ["background"] + ["nucleus"] * 13
    widget.class_map.value = LGG  # asked for by hand: refused, said why
    assert "keeps its classes" in widget.status.value
    np.testing.assert_allclose(layer.colormap.map(ids), colours)
    assert len(layer.features) == 14
    widget.class_map.value = "nuclei (instances)"
    widget.paint_class.value = "nucleus"
    assert layer.selected_label == 14  # a new nucleus


def test_a_tissue_result_keeps_its_models_palette(make_napari_viewer, qtbot):
    from napari_neuroseg.annotate.palette import ClassMap
    from napari_neuroseg.models.registry import ModelRegistry
    from napari_neuroseg.widgets._annotate_layers import apply_palette

    viewer = make_napari_viewer()
    labels = np.arange(8, dtype=np.uint8).repeat(4).reshape(4, 8)
    layer = viewer.add_labels(labels, name="tissue", metadata={
        "neuroseg": {"model": "gbm-tissue-8", "result_of": "Analyse slide"}})
    apply_palette(layer, ClassMap.from_spec(ModelRegistry().get("gbm-tissue-8")))
    colours = layer.colormap.map(np.arange(8)).copy()
    widget = AnnotateWidget(viewer)
    assert widget.class_map.value == "model: gbm-tissue-8"
    widget.class_map.value = LGG  # the same names in another order, 4 classes of 8
    np.testing.assert_allclose(layer.colormap.map(np.arange(8)), colours)
    assert "keeps its classes" in widget.status.value


def test_a_plain_layer_takes_a_class_map_its_labels_fit(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.array([[0, 1], [5, 2]], np.uint8), name="painted")
    widget = AnnotateWidget(viewer)
    widget.class_map.value = "MRI FLAIR abnormality"
    assert "labels up to 5" in widget.status.value and "class_map" not in layer.metadata.get(
        "neuroseg", {})
    layer.data = np.array([[0, 1], [1, 0]], np.uint8)
    widget.class_map.value = LGG
    widget.class_map.value = "MRI FLAIR abnormality"
    assert layer.metadata["neuroseg"]["class_map"]["names"] == ["background",
                                                                "FLAIR abnormality"]


def _press(viewer, key):
    """A key press on the canvas, as napari dispatches it (active layer, then viewer)."""
    handler = viewer.window._qt_viewer._key_map_handler
    assert handler.press_key(key)
    handler.release_key(key)


def test_keys_pick_classes_and_commit_while_the_widget_is_open(make_napari_viewer, qtbot,
                                                               slide_path, tmp_path):
    viewer, widget = _slide_widget(make_napari_viewer, slide_path, tmp_path / "store")
    assert "1-9" in widget.keys.value and "Shift-C" in widget.keys.value
    assert "1-9" in widget.paint_class.tooltip
    _rectangle(viewer, *_um(0.0, 0.0, 40.0, 40.0))
    layer = _open_region(qtbot, widget)
    assert viewer.layers.selection.active is layer
    layer.mode = "pan_zoom"
    _press(viewer, "3")  # napari's own "3" is the polygon mode
    assert widget.labels.value is layer and layer.selected_label == 3
    assert widget.paint_class.value == "infiltrating tumour" and layer.mode == "paint"
    _press(viewer, "1")
    assert layer.selected_label == 1 and widget.paint_class.value == "cellular tumour"
    _press(viewer, "5")  # LGG has classes 1-3
    assert layer.selected_label == 1 and "no class 5" in widget.status.value
    layer.data_setitem((np.array([5]), np.array([6])), 1)
    _press(viewer, "Shift-C")
    qtbot.waitUntil(lambda: widget.slide.commits == 1, timeout=10000)
    assert LabelStore.open(tmp_path / "store").read(widget.slide.saver.edit.region)[5, 6] == 1
    widget.close()


def test_keys_are_unbound_when_the_widget_closes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((8, 8), np.uint8), name="painted")
    other = viewer.add_labels(np.zeros((8, 8), np.uint8), name="other")
    widget = AnnotateWidget(viewer)
    dock = viewer.window.add_dock_widget(widget)
    widget.labels.value = layer
    widget.class_map.value = "MRI FLAIR abnormality"
    viewer.layers.selection.active = layer
    _press(viewer, "1")
    assert layer.selected_label == 1 and layer.mode == "paint"
    viewer.layers.selection.active = other  # not the chosen layer: napari's keys
    other.mode = "pan_zoom"
    _press(viewer, "4")
    assert other.mode == "fill"
    widget.labels.value = other  # the keys follow the chosen layer
    assert not layer.keymap and other.keymap
    viewer.window.remove_dock_widget(dock)  # napari's teardown
    qtbot.waitUntil(lambda: not other.keymap, timeout=5000)
    widget.close()  # again: nothing left to do
    assert not other.keymap and not layer.keymap
    _press(viewer, "2")
    assert other.mode == "paint"
    other.mode = "pan_zoom"
    other.selected_label = 1
    _press(viewer, "1")
    assert other.mode == "erase" and other.selected_label == 1


def test_field_labels_stay_whole_in_a_narrow_dock(make_napari_viewer, qtbot):
    from magicgui.widgets import CheckBox, Container, Label, PushButton
    from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QLabel, QLineEdit

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64)), name="an image layer with a very long name indeed")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="labels with a long name as well")
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.say("a status line long enough to need several lines in a dock of 250 px, with "
               "a path like /data/slides/patient-0001/slide.svs that does not break")
    assert widget.native.minimumSizeHint().width() <= 250  # the dock may narrow that far
    widget.native.setFixedWidth(250)
    qtbot.wait(50)
    fields = [w for w in [*widget, *widget.slide, *widget.instances]
              if w.label and not isinstance(w, (PushButton, CheckBox, Container, Label))]
    texts = {w.label for w in fields}
    shown = {label.text(): label for label in widget.native.findChildren(QLabel)
             if label.text() in texts}
    assert set(shown) == texts and len(texts) >= 8
    for text, label in shown.items():
        assert label.isVisible() and label.width() >= label.fontMetrics().horizontalAdvance(
            text), text
    for kind in (QComboBox, QLineEdit, QAbstractSpinBox):
        for field in widget.native.findChildren(kind):
            if field.isVisible():
                right = field.mapTo(widget.native, field.rect().topRight()).x()
                assert field.width() >= 40 and right <= 250
    for line in (widget.status.native, widget.keys.native):
        assert line.wordWrap() and line.width() <= 250 and line.height() > 20
