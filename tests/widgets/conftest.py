"""What the widget tests share: a synthetic slide, a slide layer, the camera, tiny models."""

import dataclasses

import pytest
import torch

from napari_neuroseg.io import open_image, to_layer_data
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.slide import write_synthetic_slide
from napari_neuroseg.widgets._model_picker import FROM_FILE


def write_slide(folder, mpp=0.5):
    """A 1024 x 1536 tiled, 3-level synthetic H&E slide at ``mpp`` µm/px, in ``folder``."""
    return write_synthetic_slide(folder / "s.tif", size=(1024, 1536), tile=256, mpp=mpp,
                                 layout="pages", compression="zlib", levels=3)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    """A synthetic slide at 0.5 µm/px, written once per test module."""
    return write_slide(tmp_path_factory.mktemp("slide"))


def add_slide(viewer, path):
    """Open ``path`` with the plugin's reader and add it to ``viewer``; the layer."""
    [(data, kwargs, kind)] = to_layer_data(open_image(path))
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def docked(make_napari_viewer, path, widget_class):
    """A viewer with the slide at ``path`` and a docked ``widget_class`` set to it, on CPU."""
    viewer = make_napari_viewer()
    layer = add_slide(viewer, path)
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.picker.device.value = "cpu"
    return viewer, layer, widget


def look_at(viewer, center, width_um):
    """Centre the camera on ``center`` (µm) with ``width_um`` µm across the canvas."""
    camera = viewer.scene.camera
    camera.zoom = viewer.canvas.size[1] / width_um
    camera.center = (0.0, *center) if len(camera.center) == 3 else center


def tiny_checkpoint_of(folder, model, name, **arch_kwargs):
    """Registry ``model`` with a tiny random network (``arch_kwargs``), saved as a checkpoint
    (so the widgets give no random-weights warning)."""
    registry = ModelRegistry()
    base = registry.get(model)
    spec = dataclasses.replace(base, name=name, arch_kwargs={**base.arch_kwargs, **arch_kwargs})
    torch.manual_seed(0)
    return save_checkpoint(folder / "tiny", registry.build(spec), spec)


@pytest.fixture(scope="module")
def tiny_hovernet(tmp_path_factory):
    """nuclei-hovernet (0.5 µm/px) with a tiny random network, as a checkpoint."""
    return tiny_checkpoint_of(tmp_path_factory.mktemp("ck"), "nuclei-hovernet", "tiny-hovernet",
                              base_features=4, encoder_depth=2, blocks_per_level=1)


def wait_runs(qtbot, widget, n, timeout=30000):
    """Wait until a view-analysis widget has finished ``n`` runs."""
    qtbot.waitUntil(lambda: widget.runs >= n and not widget.busy, timeout=timeout)


def run_checkpoint(qtbot, viewer, widget, checkpoint, center, width_um):
    """One run of a view-analysis widget with ``checkpoint`` on CPU, the camera on ``center``
    (µm) with ``width_um`` µm across."""
    widget.picker.model.value = FROM_FILE
    widget.picker.file.value = checkpoint
    widget.picker.device.value = "cpu"
    look_at(viewer, center, width_um)
    widget.run()
    wait_runs(qtbot, widget, 1)
