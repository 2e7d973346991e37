"""Docked panels that leave the canvas its room: width bounds, wrapped labels, short
drop-downs."""

from typing import Any

from magicgui.widgets import Container, Label
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QComboBox, QLabel

__all__ = ["COMBO_MIN_CHARS", "PANEL_MAX_WIDTH", "PANEL_MIN_WIDTH", "fit_panel"]

#: A docked panel's width bounds (pixels): the canvas keeps the rest of the window.
PANEL_MAX_WIDTH = 480
PANEL_MIN_WIDTH = 300
#: Characters a drop-down shows before it elides (its list still shows whole items).
COMBO_MIN_CHARS = 12


def fit_panel(container: Container, max_width: int = PANEL_MAX_WIDTH,
              min_width: int = PANEL_MIN_WIDTH, wrap_names: bool = True) -> Container:
    """Keep a docked panel narrow enough for the canvas, whatever text it shows.

    Text labels wrap (a status line of a Nuclei run once widened the dock until the canvas
    was 0 px wide) and show their whole text as a tooltip; drop-downs size to a few
    characters, not their longest item; the panel is ``min_width`` to ``max_width`` pixels
    wide (so field names never vanish). ``wrap_names=False`` keeps field names on one line
    (a form that sized its own name column). Applies to the widgets
    inside ``container`` now; call it again after adding widgets.

    Returns
    -------
    Container
        ``container``, for chaining.
    """
    native = container.native
    native.setMinimumWidth(min(min_width, max_width))
    native.setMaximumWidth(max_width)
    if wrap_names:
        for qlabel in native.findChildren(QLabel):
            qlabel.setWordWrap(True)  # field names too: a long one takes two lines
    for label in _widgets(container, Label):
        label.native.setWordWrap(True)
        label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.native.installEventFilter(_FULL_TEXT_TIP)
    short = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
    for combo in native.findChildren(QComboBox):
        if combo.sizeAdjustPolicy() != short:  # (a widget may have sized its own)
            combo.setSizeAdjustPolicy(short)
            combo.setMinimumContentsLength(COMBO_MIN_CHARS)
    return container


class _FullTextTip(QObject):
    """Event filter on wrapped labels: the tooltip is the whole current text (set when it is
    asked for), and the label is at least as tall as its wrapped text at its width (a form
    nested in another, such as the model picker, otherwise clipped the last lines)."""

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if not isinstance(obj, QLabel):
            return False
        kind = event.type()
        if kind == QEvent.Type.ToolTip:
            obj.setToolTip(obj.text())
        elif kind == QEvent.Type.Resize:
            need = obj.heightForWidth(obj.width())
            if need > 0 and need != obj.minimumHeight():
                obj.setMinimumHeight(need)
        return False


_FULL_TEXT_TIP = _FullTextTip()


def _widgets(container: Any, kind: type) -> list[Any]:
    """Every magicgui widget of ``kind`` inside ``container``, nested containers included."""
    found = []
    for widget in container:
        if isinstance(widget, kind):
            found.append(widget)
        if isinstance(widget, Container):
            found.extend(_widgets(widget, kind))
    return found
