"""The Stain widget driven like a user: translate the view; pixels land where they came from."""


import numpy as np
import pytest
from napari.layers import Image

from napari_neuroseg.live.viewport import box_to_pixels, visible_box
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets import _view_analysis
from napari_neuroseg.widgets.stain_widget import StainWidget

from .conftest import docked, look_at, run_checkpoint, tiny_checkpoint_of, wait_runs, write_slide

pytestmark = pytest.mark.gui


def identity(batch):
    """An 'IHC -> H&E' model that gives back its input, in [0, 1] like a ModelRunner."""
    return (batch / 255.0).astype(np.float32)


identity.output_channels = 3


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    # 0.25 µm/px: the model's 0.5 µm/px is pyramid level 1
    return write_slide(tmp_path_factory.mktemp("sw"), mpp=0.25)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_checkpoint_of(tmp_path_factory.mktemp("ck"), "ihc-to-he", "tiny-ihc-to-he",
                              base_features=4, n_blocks=1)


def _widget(make_napari_viewer, path):
    return docked(make_napari_viewer, path, StainWidget)


def test_translated_view_lands_on_its_source_pixels(make_napari_viewer, qtbot, slide_path,
                                                    monkeypatch):
    warnings = []
    monkeypatch.setattr(_view_analysis, "warn", warnings.append)
    monkeypatch.setattr(ModelSource, "runner", lambda self: identity)
    viewer, slide, widget = _widget(make_napari_viewer, slide_path)
    look_at(viewer, (120.0, 200.0), 80.0)
    widget.run_button.native.click()
    wait_runs(qtbot, widget, 1)
    if widget.picker.checkpoint() is None:
        assert warnings and "random weights" in warnings[0]
    else:  # trained weights ship with the package: nothing to warn about
        assert warnings == []
    result, layer = widget.result, widget.result_layer
    camera = viewer.scene.camera
    box = visible_box(camera.center, camera.zoom, viewer.canvas.size)
    assert result.region == box_to_pixels(box, slide.scale, slide.translate,
                                          slide.data[0].shape)
    assert isinstance(layer, Image) and layer.rgb and layer.data.dtype == np.uint8
    assert layer.data.shape == (*result.working_region.shape, 3)
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))  # level 1 of a 0.25 µm/px slide
    # identity model: each output pixel is the level-1 pixel at the same world position
    level1 = slide.data[1]
    y0, x0 = result.working_region.start
    for i, j in [(0, 0), (31, 7), (layer.data.shape[0] - 1, layer.data.shape[1] - 1)]:
        world = layer.data_to_world((i, j))
        np.testing.assert_allclose(world, slide.data_to_world(
            (2 * (y0 + i) + 0.5, 2 * (x0 + j) + 0.5)))  # centre of its 2x2 level-0 block
        np.testing.assert_array_equal(layer.data[i, j], np.asarray(level1[y0 + i, x0 + j]))
    np.testing.assert_array_equal(
        layer.data, np.asarray(level1[y0:y0 + layer.data.shape[0], x0:x0 + layer.data.shape[1]]))
    # a second view replaces the same layer
    look_at(viewer, (200.0, 300.0), 80.0)
    widget.run()
    wait_runs(qtbot, widget, 2)
    assert widget.result_layer is layer and widget.result.region != result.region
    assert [la.name for la in viewer.layers].count(layer.name) == 1
    assert layer not in widget.layer.choices  # not a slide to pick
    widget.close()


def test_a_checkpoint_translates_the_view(make_napari_viewer, qtbot, slide_path,
                                          tiny_checkpoint):
    viewer, _, widget = _widget(make_napari_viewer, slide_path)
    run_checkpoint(qtbot, viewer, widget, tiny_checkpoint, (120.0, 200.0), 80.0)
    data = widget.result_layer.data
    assert data.dtype == np.uint8 and data.shape == (*widget.result.working_region.shape, 3)
    assert data.std() > 0  # a network output, not a blank
    assert widget.result_layer.name == "tiny-ihc-to-he view"
    widget.close()


@pytest.mark.realdata
def test_real_ihc_image(make_napari_viewer, qtbot, shared_data, tiny_checkpoint):
    from skimage.io import imread

    path = shared_data / "ihc" / "ihc.png"
    if not path.is_file():
        pytest.skip("no ihc.png")
    viewer = make_napari_viewer()
    pixels = imread(path)[..., :3]
    slide = viewer.add_image(pixels, rgb=True, scale=(0.5, 0.5), name="ihc")
    widget = StainWidget(viewer)
    widget.layer.value = slide
    run_checkpoint(qtbot, viewer, widget, tiny_checkpoint, (128.0, 128.0), 300.0)
    data = widget.result_layer.data
    assert data.shape == (*pixels.shape[:2], 3) and data.dtype == np.uint8
    np.testing.assert_allclose(widget.result_layer.translate, (0.0, 0.0))
    widget.close()


def test_nuclei_runs_on_the_translated_view_offered_by_name(make_napari_viewer, qtbot,
                                                            slide_path, monkeypatch):
    """The CycleGAN + HoVer-Net chain: the Stain result is a named choice of the Nuclei
    widget ("translated H&E of <slide>"), and its nuclei lie on the translated pixels."""
    from napari.layers import Labels

    from napari_neuroseg.widgets.nuclei_widget import NucleiWidget

    from .test_nuclei_widget import Oracle

    monkeypatch.setattr(_view_analysis, "warn", lambda *_: None)
    viewer, slide, widget = _widget(make_napari_viewer, slide_path)
    monkeypatch.setattr(ModelSource, "runner", lambda self: identity)
    look_at(viewer, (120.0, 200.0), 80.0)
    widget.run_button.native.click()
    wait_runs(qtbot, widget, 1)
    translated = widget.result_layer
    assert translated.metadata["neuroseg"]["source"] == slide.name
    nuclei = NucleiWidget(viewer)
    viewer.window.add_dock_widget(nuclei)
    choices = dict(nuclei._slide_choices())
    assert choices[slide.name] is slide
    assert choices[f"translated H&E of {slide.name}"] is translated
    oracle = Oracle()
    monkeypatch.setattr(ModelSource, "runner", lambda self: oracle)
    nuclei.layer.value = translated
    nuclei.picker.device.value = "cpu"
    nuclei.preview.value = False
    nuclei.run()
    wait_runs(qtbot, nuclei, 1)
    labels = nuclei.result_layer
    assert isinstance(labels, Labels) and oracle.tiles > 0
    np.testing.assert_allclose(labels.data_to_world((0, 0)),
                               translated.data_to_world(nuclei.result.region.start))
    nuclei.close()
    widget.close()
