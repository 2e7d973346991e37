"""The Nuclei widget on a plain H&E tile (a PNG that states no µm/px), at the µm/px the user
sets in its µm/px field."""


import numpy as np
import pytest
from PIL import Image

from napari_neuroseg.engine import Region
from napari_neuroseg.io import open_image, to_layer_data
from napari_neuroseg.samples._slide_texture import he_region
from napari_neuroseg.widgets._model_picker import FROM_FILE
from napari_neuroseg.widgets.nuclei_widget import NucleiWidget

pytestmark = pytest.mark.gui

TILE = 128


@pytest.fixture
def png_tile(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(he_region(0, 0, TILE, TILE, size=(TILE, TILE), seed=3)).save(path)
    return path


def _run(qtbot, widget):
    runs = widget.runs
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.runs > runs and not widget.busy, timeout=30000)
    return widget.result


def test_a_png_tile_runs_at_the_mpp_the_user_sets(make_napari_viewer, qtbot, png_tile,
                                                  tiny_hovernet):
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="unknown"):
        [(data, kwargs, kind)] = to_layer_data(open_image(png_tile))
    tile = getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = NucleiWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = tile
    widget.picker.device.value = "cpu"
    widget.picker.model.value = FROM_FILE
    widget.picker.file.value = tiny_hovernet
    assert widget.mpp.value_box.value == 1.0 and "ASSUMED" in widget.mpp.origin.value
    widget.mpp.value_box.value = 0.25  # the user knows the tile: 40x, 0.25 µm/px
    np.testing.assert_allclose(tile.scale, (0.25, 0.25))
    assert widget.mpp.origin.value == "set by you"
    viewer.reset_view()  # the whole tile on screen
    result = _run(qtbot, widget)
    assert widget.loaded.plan.image.scale == (0.25, 0.25)
    assert result.region == Region(0, 0, TILE, TILE)
    assert result.working_region.shape == (TILE // 2, TILE // 2)  # at the model's 0.5 µm/px
    assert result.mpp == pytest.approx(0.5)
    layer = widget.result_layer
    assert layer.data.shape == (TILE // 2, TILE // 2)
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    # the result covers the tile: its corners land on the tile's corners (32 µm a side)
    np.testing.assert_allclose(layer.data_to_world((-0.5, -0.5)), tile.data_to_world((-0.5, -0.5)))
    np.testing.assert_allclose(layer.data_to_world((TILE // 2 - 0.5,) * 2),
                               tile.data_to_world((TILE - 0.5,) * 2))
    assert "at 0.5 µm/px" in widget.status.value
    # another µm/px: another working grid, computed afresh (no tile of the old grid reused)
    widget.mpp.value_box.value = 0.5
    viewer.reset_view()
    result = _run(qtbot, widget)
    assert result.working_region.shape == (TILE, TILE)
    np.testing.assert_allclose(widget.result_layer.scale, (0.5, 0.5))
    assert result.counts.cached == 0 and result.counts.computed > 0
    widget.close()
