"""Shared widget pieces: workers whose widget went away deliver nothing."""

import pytest
from magicgui.widgets import Container

from napari_neuroseg.widgets._common import start_worker, widget_gone

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
