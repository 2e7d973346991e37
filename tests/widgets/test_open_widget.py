"""The Open widget driven like a user would: pick, inspect, choose options, open."""

import numpy as np
import pytest

from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.slide import write_synthetic_slide
from napari_neuroseg.widgets.open_widget import ALL_SERIES, OpenWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    w = OpenWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _wait_ready(qtbot, widget):
    qtbot.waitUntil(lambda: widget.status.value.endswith("ready to open")
                    or widget.status.value == "Failed", timeout=20000)


def test_dicom_folder_lists_series_and_opens_the_chosen_one_resampled(widget, qtbot, tmp_path):
    write_ct_series(tmp_path / "ct", n_slices=6, size=32, series=2, tilt_deg=15.0)
    widget.folder.value = True
    widget.path.value = tmp_path / "ct"
    _wait_ready(qtbot, widget)
    assert widget.series.enabled and widget.resample.enabled and not widget.mpp.enabled
    choices = [c for c in widget.series.choices if c != ALL_SERIES]
    assert len(choices) == 2
    widget.series.value = choices[0]
    widget.resample.value = True
    widget.spacing.value = 2.5
    assert widget.options()["resample"] is True and widget.options()["spacing"] == 2.5
    widget.open_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget._viewer.layers) == 1, timeout=20000)
    layer = widget._viewer.layers[0]
    np.testing.assert_allclose(layer.scale[0], 2.5)
    assert "Resampled: spacing mm 2.5" in widget.info.value


def test_slide_without_mpp_takes_the_override(widget, qtbot, tmp_path):
    path = write_synthetic_slide(tmp_path / "nompp.tif", size=(1024, 1024), tile=256, mpp=None,
                                 layout="pages", compression="zlib")
    widget.path.value = path
    _wait_ready(qtbot, widget)
    assert widget.mpp.enabled and not widget.resample.enabled
    assert "MPP" in widget.info.value  # the missing-MPP warning is shown before opening
    widget.mpp.value = 0.25
    widget.open_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget._viewer.layers) == 1, timeout=20000)
    np.testing.assert_allclose(widget._viewer.layers[0].scale, (0.25, 0.25))


def test_unreadable_path_reports_the_problem(widget, qtbot, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    widget.path.value = bad
    _wait_ready(qtbot, widget)
    assert widget.status.value == "Failed"
    assert "notes.txt" in widget.info.value
    assert not widget.open_button.enabled


def test_opening_with_default_options_reuses_what_inspecting_read(widget, qtbot, tmp_path,
                                                                  monkeypatch):
    import napari_neuroseg.widgets.open_widget as module

    write_ct_series(tmp_path / "ct", n_slices=4, size=32)
    widget.folder.value = True
    widget.path.value = tmp_path / "ct"
    _wait_ready(qtbot, widget)
    calls = []
    monkeypatch.setattr(module, "open_image", lambda *a, **k: calls.append(a) or [])
    widget.open_button.clicked.emit()
    qtbot.waitUntil(lambda: len(widget._viewer.layers) == 1, timeout=20000)
    assert calls == []  # the headers were not read a second time
    assert widget._viewer.layers[0].data.shape == (4, 32, 32)


def test_dicom_warnings_are_shown_once_naming_the_series_once(make_napari_viewer, qtbot,
                                                              tmp_path):
    from napari.utils.notifications import notification_manager
    from pydicom import dcmread

    viewer = make_napari_viewer(show=True)
    widget = OpenWidget(viewer)
    viewer.window.add_dock_widget(widget)
    folder = tmp_path / "ct"
    for path in write_ct_series(folder, n_slices=6, size=32, tilt_deg=15.0, uneven=True):
        ds = dcmread(path)
        del ds.SeriesDescription  # a series without description: no blank "Series:" line
        ds.save_as(path)
    shown = []
    notification_manager.notification_ready.connect(lambda n: shown.append(str(n.message)))
    widget.folder.value = True
    widget.path.value = folder
    _wait_ready(qtbot, widget)
    assert "CT series (#1)" in widget.series.choices[1] and "(none)" not in widget.series.choices[1]
    widget.open_button.clicked.emit()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=20000)
    qtbot.wait(200)
    name = viewer.layers[0].name
    warned = [m for m in shown if "gantry tilt" in m or "uneven slice spacing" in m]
    assert len(warned) == 2, warned  # tilt and spacing, each once
    assert all(m.startswith(f"{name}: ") and m.count(name) == 1 for m in warned)
    lines = widget.info.value.splitlines()
    assert not any(line.startswith("Series:") for line in lines)
    assert "Series number: 1" in lines
    assert all(line.count(name) <= 1 for line in lines)
