"""Workers and teardown: results of a widget that went away are dropped, errors reach
``on_error``, panels closed by napari or by code disconnect and stop their workers."""

import pytest
from magicgui.widgets import Container

from napari_neuroseg.widgets._panel import PANEL_MAX_WIDTH
from napari_neuroseg.widgets._workers import start_worker, widget_gone

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

def test_forget_removed_layers_drops_only_layers_gone_from_the_viewer():
    from types import SimpleNamespace

    from napari_neuroseg.widgets._workers import forget_removed_layers

    kept, gone = object(), object()
    viewer = SimpleNamespace(layers=[kept])
    owner = SimpleNamespace(a=kept, b=gone, c=None)
    forget_removed_layers(owner, viewer, "a", "b", "c")
    assert owner.a is kept and owner.b is None and owner.c is None

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
    from napari_neuroseg.widgets import _workers
    from napari_neuroseg.widgets.export_widget import ExportWidget

    viewer = make_napari_viewer()
    before = len(_workers._WATCHERS)
    widget = ExportWidget(viewer)
    assert len(_workers._WATCHERS) == before + 1
    widget.close()
    assert len(_workers._WATCHERS) == before
