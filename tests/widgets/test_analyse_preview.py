"""The Analyse widget's coarse preview: painted first, refined, no stale tiles, switch off."""

import time

import numpy as np
import pytest

from napari_neuroseg.analysis import plan_slide
from napari_neuroseg.live import LiveSession
from napari_neuroseg.models.spec import InputSpec, ModelSpec
from napari_neuroseg.widgets import analyse_widget
from napari_neuroseg.widgets.analyse_widget import AnalyseWidget

from .conftest import docked, look_at

pytestmark = pytest.mark.gui

SPEC = ModelSpec(
    name="toy-dense", task="semantic_segmentation", architecture="unet",
    arch_kwargs={"in_channels": 3, "out_channels": 2, "depth": 2, "base_features": 4},
    input=InputSpec(("R", "G", "B"), {"kind": "range", "scale": 255.0}, (64, 64), halo=8,
                    resolution=1.0),
    classes=("background", "tissue"), colors=("#000000", "#ff00ff"), output="probabilities")


class Pointwise:
    """'tissue' = 1 - mean intensity, per pixel (so any tiling gives the same values)."""

    output_channels = 2

    def __init__(self):
        self.delay = 0.0

    def __call__(self, batch):
        time.sleep(self.delay)
        p = 1 - batch.mean(axis=1, keepdims=True) / 255.0
        return np.concatenate([1 - p, p], axis=1).astype(np.float32)


@pytest.fixture
def predictor(monkeypatch):
    """The widget's sessions run the toy dense model with a pointwise predictor."""
    made = Pointwise()

    def build(image, source, stain, tissue, cache, preview=True):
        plan = plan_slide(image, SPEC, stain_normalization=False, tissue_only=False)
        return LiveSession(plan, made, "toy", cache=cache, batch_size=2, preview=preview)

    monkeypatch.setattr(analyse_widget, "build_session", build)
    return made


def _idle(widget):
    session = widget.session
    return session is not None and session.pending == 0 and len(session.queue) == 0


def _view_cores(widget):
    session = widget.session
    return session.grid.tiles_in(session.working_region(widget.visible_box()), blended=False)


def _assert_refined(widget, cores):
    """Every core shows the working tiles' values (pointwise: read them from the slide)."""
    session = widget.session
    for core in cores:
        assert core.key in session._done and core.key not in session.previewed
        region = session._clip(core.core)
        probs, _ = session.store.read(region)
        rgb = np.asarray(session.plan.array[region.y0:region.y1, region.x0:region.x1])
        want = 1 - rgb.astype(np.float32).mean(axis=2) / 255.0
        np.testing.assert_allclose(probs[1], want, atol=1 / 255 + 1e-6)


def test_preview_first_then_refined_then_a_pan_then_switched_off(make_napari_viewer, qtbot,
                                                                 slide_path, predictor):
    viewer, _layer, widget = docked(make_napari_viewer, slide_path, AnalyseWidget)
    statuses = []  # the status after each update of the session
    on_update = widget._on_update

    def record(update):
        on_update(update)
        statuses.append(widget.status.value)

    widget._on_update = record  # (connected when the session starts)
    look_at(viewer, (200.0, 200.0), 240.0)
    widget.live.value = True
    qtbot.waitUntil(lambda: _idle(widget), timeout=60000)
    first = next(i for i, s in enumerate(statuses) if s.startswith("Preview"))
    tiles = [i for i, s in enumerate(statuses) if "pending" in s]
    assert "µm/px" in statuses[first] and tiles and first < tiles[0]  # the preview came first
    assert widget.heatmap_layer is not None and widget.labels_layer is not None
    _assert_refined(widget, _view_cores(widget))  # then every core was refined
    # a pan while the tiles are refined: the rest of the old view is dropped
    predictor.delay = 0.2
    statuses.clear()
    look_at(viewer, (300.0, 560.0), 240.0)
    qtbot.waitUntil(lambda: any(s.startswith("Preview") for s in statuses), timeout=30000)
    qtbot.waitUntil(lambda: widget.counts["computed"] > 0 and "pending" in statuses[-1],
                    timeout=30000)
    look_at(viewer, (260.0, 420.0), 240.0)
    qtbot.waitUntil(lambda: _idle(widget) and widget.session.queue.generation >= 3,
                    timeout=60000)
    _assert_refined(widget, _view_cores(widget))  # the view on screen: no stale tile
    predictor.delay = 0.0
    # switched off: the next view goes straight to the tiles
    widget.preview.value = False
    assert widget.session.preview is False
    statuses.clear()
    generation = widget.session.queue.generation
    look_at(viewer, (390.0, 150.0), 240.0)
    qtbot.waitUntil(lambda: widget.session.queue.generation > generation and _idle(widget)
                    and any("pending" in s for s in statuses), timeout=60000)
    assert not any(s.startswith("Preview") for s in statuses)
    _assert_refined(widget, _view_cores(widget))
    widget.close()
