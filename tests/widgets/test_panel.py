"""Docked panels keep the canvas its room whatever text they show."""

import pytest
from magicgui.widgets import ComboBox, Container, Label

from napari_neuroseg.widgets._panel import COMBO_MIN_CHARS, PANEL_MAX_WIDTH, fit_panel

pytestmark = pytest.mark.gui


def test_fit_panel_bounds_the_width_and_wraps_long_text(qtbot):
    long = "a status line that goes on " * 20
    inner = Container(widgets=[Label(value=long)])
    combo = ComboBox(choices=["short", "an item name far longer than the panel " * 4])
    panel = Container(widgets=[inner, combo])
    assert fit_panel(panel) is panel
    assert panel.native.maximumWidth() == PANEL_MAX_WIDTH
    assert inner[0].native.wordWrap()  # nested containers too
    assert combo.native.minimumContentsLength() == COMBO_MIN_CHARS
