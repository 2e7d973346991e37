"""The CT widget's plot: metastasis probability per slice, the threshold and the slice on screen."""

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

__all__ = ["SliceProbabilityPlot"]


class SliceProbabilityPlot(FigureCanvasQTAgg):
    """Probability against slice position (mm), the threshold line and the current slice."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4.0, 2.6), layout="tight")
        super().__init__(self.figure)
        self.axes = self.figure.add_subplot()
        self.axes.set(xlabel="slice position (mm)", ylabel="metastasis probability",
                      ylim=(-0.02, 1.02))
        (self.curve,) = self.axes.plot([], [], "o-", color="tab:blue", markersize=3)
        self.threshold_line = self.axes.axhline(0.5, color="tab:red", linestyle="--", lw=1)
        self.marker = self.axes.axvline(0.0, color="tab:orange", lw=1.5, visible=False)
        self.setMinimumHeight(180)

    def set_curve(self, positions: np.ndarray, probabilities: np.ndarray) -> None:
        """Show per-slice probabilities at their positions (mm)."""
        self.curve.set_data(positions, probabilities)
        if len(positions):
            lo, hi = float(np.min(positions)), float(np.max(positions))
            pad = max(0.02 * (hi - lo), 1.0)
            self.axes.set_xlim(lo - pad, hi + pad)
        self.draw_idle()

    def set_threshold(self, value: float) -> None:
        """Move the threshold line."""
        self.threshold_line.set_ydata([value, value])
        self.draw_idle()

    def set_warning(self, text: str | None) -> None:
        """Show ``text`` as the plot's title, in red (None: no title)."""
        self.axes.set_title(text or "", fontsize=9, color="tab:red")
        self.draw_idle()

    @property
    def warning(self) -> str:
        """The plot's title ("" when there is none)."""
        return self.axes.get_title()

    def set_marker(self, position: float | None) -> None:
        """Put the current-slice marker at ``position`` mm (hidden for ``None``)."""
        self.marker.set_visible(position is not None)
        if position is not None:
            self.marker.set_xdata([position, position])
        self.draw_idle()
