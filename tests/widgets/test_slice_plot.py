"""The CT widget's slice-probability plot: curve, threshold, marker and warning title."""

import numpy as np
import pytest

from napari_neuroseg.widgets._slice_plot import SliceProbabilityPlot

pytestmark = pytest.mark.gui


def test_the_plot_shows_the_curve_threshold_marker_and_warning(qtbot):
    plot = SliceProbabilityPlot()
    qtbot.addWidget(plot)
    plot.set_curve(np.array([0.0, 5.0, 10.0]), np.array([0.1, 0.9, 0.2]))
    assert plot.axes.get_xlim()[0] < 0.0 and plot.axes.get_xlim()[1] > 10.0
    plot.set_threshold(0.3)
    assert list(plot.threshold_line.get_ydata()) == [0.3, 0.3]
    plot.set_marker(5.0)
    assert plot.marker.get_visible() and list(plot.marker.get_xdata()) == [5.0, 5.0]
    plot.set_marker(None)
    assert not plot.marker.get_visible()
    assert plot.warning == ""
    plot.set_warning("RANDOM")
    assert plot.warning == "RANDOM"
    plot.set_warning(None)
    assert plot.warning == ""
