"""Live training curves for the Train widget: losses and validation metrics per epoch.

A matplotlib canvas with two panels, fed the run's progress events as they arrive
(:meth:`TrainingCurves.add_event`): every ``epoch_end`` event adds a point to each of its
numbers (losses on the left, validation metrics such as Dice or PQ on the right), and the
``baseline`` event (the starting weights validated before the first epoch, ``--init``) draws
each of its values as a dashed horizontal line in its curve's colour, so a run that ends below
where it started shows it.
"""

import math
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["TrainingCurves", "curve_values"]

_NOT_CURVES = {"event", "epoch", "epochs", "seconds", "lr", "step", "steps"}


def curve_values(event: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of an ``epoch_end`` or ``baseline`` event, by name (no counters)."""
    return {key: float(value) for key, value in event.items()
            if key not in _NOT_CURVES and isinstance(value, (int, float))
            and not isinstance(value, bool) and math.isfinite(value)}


class TrainingCurves(FigureCanvasQTAgg):
    """Loss (left) and validation metric (right) curves of one training run.

    Attributes
    ----------
    lines : dict of str to Line2D
        One curve per value name (``train_loss``, ``val_loss``, ``slice_dice``...).
    references : dict of str to Line2D
        The starting model's value per name (dashed, from the ``baseline`` event).
    """

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4.0, 2.4), layout="tight")
        super().__init__(self.figure)
        self.loss_axes, self.metric_axes = self.figure.subplots(1, 2)
        self.lines: dict[str, Any] = {}
        self.references: dict[str, Any] = {}
        self.setMinimumHeight(170)
        self.reset()

    def reset(self) -> None:
        """Empty both panels (a new run starts)."""
        for axes, title in ((self.loss_axes, "loss"), (self.metric_axes, "validation")):
            axes.clear()
            axes.set_title(title, fontsize=9)
            axes.set_xlabel("epoch", fontsize=8)
            axes.tick_params(labelsize=7)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.lines, self.references = {}, {}
        self.draw_idle()

    def _axes(self, name: str) -> Any:
        return self.loss_axes if name.endswith("loss") else self.metric_axes

    def _line(self, name: str) -> Any:
        if name not in self.lines:
            (self.lines[name],) = self._axes(name).plot([], [], "o-", markersize=3, lw=1.2,
                                                        label=name)
        return self.lines[name]

    def add_event(self, event: dict[str, Any]) -> bool:
        """Show an ``epoch_end`` (a point per value) or ``baseline`` event (reference lines).

        Returns
        -------
        bool
            Whether the event changed the plot (other events are ignored).
        """
        kind = event.get("event")
        values = curve_values(event)
        if kind == "epoch_end":
            epoch = int(event["epoch"]) + 1
            for name, value in values.items():
                line = self._line(name)
                xs, ys = list(line.get_xdata()), list(line.get_ydata())
                line.set_data([*xs, epoch], [*ys, value])
        elif kind == "baseline":
            for name, value in values.items():
                old = self.references.pop(name, None)
                if old is not None:
                    old.remove()
                self.references[name] = self._axes(name).axhline(
                    value, linestyle="--", lw=1, color=self._line(name).get_color(),
                    label=f"{name} (start)")
        else:
            return False
        for axes in (self.loss_axes, self.metric_axes):
            axes.relim()
            axes.autoscale_view()
            if axes.lines:
                axes.legend(fontsize=6, loc="best")
        self.draw_idle()
        return True
