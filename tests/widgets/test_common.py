"""Shared widget pieces: workers whose widget went away deliver nothing."""

import dataclasses

import pytest
from magicgui.widgets import Container

from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import PREFERRED_MODELS, ModelRegistry
from napari_neuroseg.widgets._common import (
    FROM_FILE,
    PANEL_MAX_WIDTH,
    ModelPicker,
    start_worker,
    widget_gone,
)

pytestmark = pytest.mark.gui


class _Receiver(Container):
    def __init__(self):
        super().__init__()
        self.got = []

    def take(self, value):
        self.got.append(value)


def test_results_after_close_or_deletion_are_dropped(qtbot):
    live, closed = _Receiver(), _Receiver()
    closed._closed = True
    assert not widget_gone(live) and widget_gone(closed)
    workers = [start_worker(lambda: 7, on_done=w.take) for w in (live, closed)]
    for worker in workers:
        qtbot.waitUntil(lambda w=worker: not w.is_running, timeout=10000)
    qtbot.wait(50)
    assert live.got == [7] and closed.got == []
    deleted = _Receiver()
    deleted.native.deleteLater()
    qtbot.waitUntil(lambda: widget_gone(deleted), timeout=5000)


# --- ModelPicker: bundled weights, provenance and warnings --------------------------------


def _save(folder, name, synthetic=False, training_data=None, **arch):
    """A tiny checkpoint of declared model ``name`` (arch_kwargs shrunk by ``arch``)."""
    base = ModelRegistry(bundled=False).get(name)
    extra = {**base.extra, **({"training_data": training_data} if training_data else {})}
    spec = dataclasses.replace(base, arch_kwargs={**base.arch_kwargs, **arch},
                               synthetic=synthetic, extra=extra)
    folder.mkdir(exist_ok=True)
    return save_checkpoint(folder / name, ModelRegistry(bundled=False).build(spec), spec)


@pytest.fixture
def bundled(tmp_path):
    """A registry whose bundled folder holds a real-data LeNet and a synthetic U-Net."""
    folder = tmp_path / "weights"
    lenet = _save(folder, "nuclei-lenet", training_data="toy tiles (8 items)", input_size=32)
    unet = _save(folder, "mri-flair-unet", synthetic=True, depth=2, base_features=4)
    return ModelRegistry(bundled=folder), lenet, unet


TASKS = ("semantic_segmentation", "tile_classification")


def test_picker_runs_bundled_weights_and_shows_their_provenance(qtbot, bundled):
    registry, lenet, unet = bundled
    picker = ModelPicker(TASKS, registry=registry)
    picker.model.value = "nuclei-lenet"
    source = picker.source()
    assert source.checkpoint == lenet and not source.random_weights
    assert picker.warning == "" and not picker.random_weights
    assert picker.provenance.value == (
        "trained on real data (toy tiles (8 items), see docs/models.md)")
    assert picker.index(picker.provenance) == picker.index(picker.model) + 1  # under the combo

    picker.model.value = "mri-flair-unet"
    assert picker.source().checkpoint == unet
    assert picker.provenance.value == "trained on SYNTHETIC data - not clinically meaningful"
    assert "SYNTHETIC" in picker.warning and "random" not in picker.warning
    assert not picker.random_weights

    picker.model.value = "lgg-tissue"  # ships nothing
    source = picker.source()
    assert source.random_weights and source.model == "lgg-tissue"
    assert picker.provenance.value == "random weights (no trained model shipped)"
    assert "random weights" in picker.warning and picker.random_weights


def test_picker_checkpoint_file_provenance(qtbot, bundled, tmp_path):
    registry, _, unet = bundled
    picker = ModelPicker(TASKS, registry=registry)
    picker.model.value = FROM_FILE
    assert "choose a checkpoint file" in picker.provenance.value
    picker.file.value = unet
    assert picker.provenance.value.startswith("trained on SYNTHETIC data")
    assert picker.warning == "mri-flair-unet.safetensors: " + picker.provenance.value
    own = _save(tmp_path / "own", "nuclei-lenet", input_size=32)
    picker.file.value = own
    assert picker.provenance.value == (
        "trained weights from nuclei-lenet.safetensors (training data not recorded)")
    assert picker.warning == "" and picker.source().checkpoint == own


def test_default_picker_uses_the_shipped_weights_when_present(qtbot):
    registry = ModelRegistry()
    shipped = [n for n in ("nuclei-lenet", "nuclei-hovernet", "mri-flair-unet")
               if registry.checkpoint(n) is not None]
    if not shipped:
        pytest.skip("no weights ship in this checkout")
    picker = ModelPicker(("semantic_segmentation", "tile_classification",
                          "instance_segmentation"))
    for name in shipped:
        picker.model.value = name
        assert picker.source().checkpoint == registry.checkpoint(name)
        assert "random" not in picker.warning
        assert picker.provenance.value == registry.provenance(name)


def test_forget_removed_layers_drops_only_layers_gone_from_the_viewer():
    from types import SimpleNamespace

    from napari_neuroseg.widgets._common import forget_removed_layers

    kept, gone = object(), object()
    viewer = SimpleNamespace(layers=[kept])
    owner = SimpleNamespace(a=kept, b=gone, c=None)
    forget_removed_layers(owner, viewer, "a", "b", "c")
    assert owner.a is kept and owner.b is None and owner.c is None


def test_layer_data_without_dask_gets_tile_sized_chunks(tmp_path):
    """Plain arrays get 512-pixel chunks (not dask's 128 MB "auto"), zarr keeps its own."""
    import dask.array as da
    import numpy as np
    import zarr

    from napari_neuroseg.widgets._common import LAYER_CHUNK, lazy_level

    rgb = lazy_level(np.zeros((3000, 2000, 3), np.uint8), rgb=True)
    assert rgb.chunksize == (LAYER_CHUNK, LAYER_CHUNK, 3)
    volume = lazy_level(np.zeros((4, 600, 700), np.int16), rgb=False)
    assert volume.chunksize == (1, LAYER_CHUNK, LAYER_CHUNK)
    stored = zarr.create_array(str(tmp_path / "a.zarr"), shape=(1000, 1000), chunks=(250, 125),
                               dtype="uint8")
    assert lazy_level(stored, rgb=False).chunksize == (250, 125)
    already = da.zeros((100, 100), chunks=10)
    assert lazy_level(already, rgb=False) is already


# --- teardown: panels closed with napari's title-bar X, the viewer closed ------------------


def _listeners(emitter):
    """The objects whose bound methods a napari event emitter calls (napari's own
    ``reset_choices`` hook of docked magicgui widgets left out)."""
    owners = []
    for callback in emitter.callbacks:
        if isinstance(callback, tuple):  # (weakref to the object, method name)
            if callback[1] != "reset_choices":
                owners.append(callback[0]())
        elif getattr(callback, "__name__", "") != "reset_choices":
            owners.append(getattr(callback, "__self__", None))
    return owners


@pytest.mark.parametrize("names", [
    ("Analyse slide",) * 3,
    ("Analyse slide", "CT analysis"),
    ("Nuclei", "Nuclei", "Stain translation", "Stain translation"),
    ("MRI", "Train", "Export", "Annotate", "Open image"),
])
def test_closing_panels_with_the_title_bar_x_tears_them_down(make_napari_viewer, qtbot, names):
    """Issue 12, blocker 1: open a panel, close it with its X, again; remove a layer; GC.

    The disconnect used to hang on the Qt widget's ``destroyed`` signal and ran during garbage
    collection of the deleted widget: napari segfaulted (6 runs of 6).
    """
    import gc

    import numpy as np

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="he")
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-neuroseg", name)
        qtbot.wait(50)
        assert widget.native.maximumWidth() <= PANEL_MAX_WIDTH  # blocker 3: the canvas stays
        if name != "Open image":  # the one panel that does not follow the layer list
            assert widget in _listeners(viewer.layers.events.inserted)
        dock.destroyOnClose()  # what the title-bar X does
        try:
            qtbot.waitUntil(lambda w=widget: w not in _listeners(viewer.layers.events.inserted),
                            timeout=5000)
        except qtbot.TimeoutError as err:
            raise AssertionError(f"{name} still listens after napari removed it") from err
        gc.collect()
    viewer.layers.remove(viewer.add_labels(np.zeros((8, 8), np.uint8)))
    qtbot.wait(50)
    gc.collect()


def test_closing_the_viewer_during_a_run_stops_and_waits_for_the_worker(make_napari_viewer,
                                                                       qtbot):
    """Issue 12, item 12: a worker still running when the viewer closes is stopped and waited
    for, so its results never reach deleted Qt objects ("wrapped C/C++ object deleted")."""
    import threading

    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-neuroseg", "MRI")
    stop, ticks = threading.Event(), []

    def slow():
        while not stop.is_set():
            ticks.append(1)
            yield len(ticks)
            stop.wait(0.02)

    worker = start_worker(slow, on_yield=lambda n: widget.status.value, owner=widget)
    widget.worker = worker  # the MRI widget stops its worker on teardown
    qtbot.waitUntil(lambda: len(ticks) > 2, timeout=5000)
    viewer.close()
    assert not worker.is_running  # stopped and waited for before Qt deleted anything
    seen = len(ticks)
    qtbot.wait(100)
    assert len(ticks) == seen


def test_picker_starts_on_a_model_with_trained_weights(qtbot):
    """Issue 12: Analyse defaulted to gbm-tissue-8, which has random weights."""
    registry = ModelRegistry()
    names = ("gbm-tissue-8", "lgg-tissue", "nuclei-lenet")
    picker = ModelPicker(("semantic_segmentation", "tile_classification"), names=names)
    trained = [n for n in names if registry.checkpoint(n) is not None]
    if not trained:
        pytest.skip("no weights ship in this checkout")
    assert picker.model.value == trained[0] and not picker.random_weights


def test_picker_starts_on_the_first_preferred_model_that_ships_weights(qtbot, bundled):
    registry, _, _ = bundled  # trained: mri-flair-unet (first in menu order), nuclei-lenet
    assert ModelPicker(TASKS, registry=registry, preferred=()).model.value == "mri-flair-unet"
    picker = ModelPicker(TASKS, registry=registry, preferred=("lgg-tissue", "nuclei-lenet"))
    assert picker.model.value == "nuclei-lenet"  # lgg-tissue is preferred but ships nothing
    # the declared preference (mri-flair-transunet) ships nothing in this registry
    assert ModelPicker(TASKS, registry=registry).model.value == "mri-flair-unet"


def test_the_declared_preference_applies_only_to_the_pickers_that_offer_it(qtbot):
    """mri-flair-transunet cross-validated best: the MRI models start on it; other pickers
    keep the first model with trained weights."""
    registry = ModelRegistry()
    if any(registry.checkpoint(n) is None for n in ("mri-flair-transunet", "nuclei-lenet")):
        pytest.skip("the FLAIR TransUNet or the nuclei LeNet ships no weights in this checkout")
    assert PREFERRED_MODELS == ("mri-flair-transunet",)
    mri = ModelPicker(("semantic_segmentation",), names=("mri-flair-unet", "mri-flair-transunet"))
    assert mri.model.value == "mri-flair-transunet" and not mri.random_weights
    slide = ModelPicker(("semantic_segmentation", "tile_classification"),
                        names=("gbm-tissue-8", "lgg-tissue", "nuclei-lenet"))
    first_trained = next(n for n in ("gbm-tissue-8", "lgg-tissue", "nuclei-lenet")
                         if registry.checkpoint(n) is not None)
    assert slide.model.value == first_trained and not slide.random_weights


def test_a_runtime_error_in_a_worker_reaches_on_error(qtbot):
    """torch raises RuntimeError; superqt alone would swallow it and never finish the worker."""
    got = []

    def fails():
        raise RuntimeError("CUDA out of memory")

    def fails_later():
        yield 1
        raise RuntimeError("size mismatch")

    workers = [start_worker(fails, on_error=got.append),
               start_worker(fails_later, on_yield=lambda _v: None, on_error=got.append)]
    for worker in workers:
        qtbot.waitUntil(lambda w=worker: not w.is_running, timeout=10000)
    qtbot.waitUntil(lambda: len(got) == 2, timeout=5000)
    assert sorted(str(e) for e in got) == ["RuntimeError: CUDA out of memory",
                                           "RuntimeError: size mismatch"]


def test_a_panel_closed_by_code_is_not_kept_alive_by_its_watcher(make_napari_viewer):
    from napari_neuroseg.widgets import _common
    from napari_neuroseg.widgets.export_widget import ExportWidget

    viewer = make_napari_viewer()
    before = len(_common._WATCHERS)
    widget = ExportWidget(viewer)
    assert len(_common._WATCHERS) == before + 1
    widget.close()
    assert len(_common._WATCHERS) == before
