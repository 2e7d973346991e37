"""The Analyse widget's result layers keep their identity when a new session's pyramid has a
different number of levels (another model's working resolution, another slide)."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_neuroseg.engine import Region
from napari_neuroseg.live import ResultStore
from napari_neuroseg.widgets._live_layers import show_heatmap, show_labels

pytestmark = pytest.mark.gui

SPEC = SimpleNamespace(name="toy", classes=("background", "tumour", "necrosis"),
                       colors=("#000000", "#ff0000", "#00ff00"))


def _session(shape, scale):
    """A stand-in live session: a plan's geometry and spec, and a store with a block written."""
    store = ResultStore(shape, 3, scale=(scale, scale))  # the widget's chunk and min_side
    probs = np.zeros((3, 32, 32), np.float32)
    probs[1] = 1.0
    store.write(Region(0, 0, 32, 32), probs, np.ones((32, 32), np.uint8))
    plan = SimpleNamespace(scale=(scale, scale), translate=(0.0, 0.0), spec=SPEC)
    return SimpleNamespace(plan=plan, store=store)


@pytest.fixture
def sessions():
    """Fine: a 1024 x 1536 grid at 1 µm/px (several levels); coarse: the same 1024 x 1536 µm
    at 10 µm/px (102 x 154, once a one-level pyramid that napari could not show)."""
    made = {"fine": _session((1024, 1536), 1.0), "coarse": _session((102, 154), 10.0)}
    yield made
    for session in made.values():
        session.store.close()


def test_coarse_store_has_the_two_levels_napari_needs(sessions):
    assert sessions["fine"].store.n_levels == 3
    assert sessions["coarse"].store.n_levels == 2


@pytest.mark.parametrize("order", [("fine", "coarse", "fine"), ("coarse", "fine", "coarse")])
def test_level_count_change_keeps_the_layers(make_napari_viewer, qtbot, sessions, order):
    """many -> few -> many and few -> many -> few levels, in a real viewer: the same two layers
    show each session's store, keep their place, visibility and opacity, and still draw."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((1024, 1536), np.uint8), name="slide")
    first = sessions[order[0]]
    labels = show_labels(viewer, None, first, "toy labels")
    heatmap = show_heatmap(viewer, None, first, 1, "toy tumour")
    viewer.add_points([[10.0, 10.0]], name="notes")  # a user's layer above the results
    labels.opacity, heatmap.visible = 0.8, False  # the user's choices
    for name in order[1:]:
        session = sessions[name]
        assert show_labels(viewer, labels, session, "toy labels") is labels
        assert show_heatmap(viewer, heatmap, session, 1, "toy tumour") is heatmap
        viewer.screenshot(canvas_only=True)  # both layers draw the new pyramid
        heatmap.visible = True
        viewer.screenshot(canvas_only=True)
        heatmap.visible = False
        qtbot.wait(10)
        assert [layer.name for layer in viewer.layers] == ["slide", "toy labels", "toy tumour",
                                                           "notes"]
        assert len(labels.data) == len(heatmap.data) == session.store.n_levels
        assert labels.data[0].store is session.store and heatmap.data[0].store is session.store
        assert labels.multiscale and heatmap.multiscale
        assert tuple(labels.scale) == session.plan.scale
        assert labels.opacity == 0.8 and heatmap.visible is False
        # the written block reads back at the world position it was written at
        index = np.round(labels.world_to_data((5.0 * session.plan.scale[0],) * 2)).astype(int)
        assert np.asarray(labels.data[0][tuple(slice(i, i + 1) for i in index)]).item() == 1
