"""What a live session tells the GUI: one :class:`LiveUpdate` per step of
:meth:`~napari_neuroseg.live.session.LiveSession.serve`, and :class:`ViewTooLarge` when a view
needs more tiles than live mode computes.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_neuroseg.engine import Region

__all__ = ["LiveUpdate", "ViewTooLarge"]


class ViewTooLarge(ValueError):
    """The view needs more tiles than live mode computes (zoom in, or run the whole image)."""


@dataclass(frozen=True)
class LiveUpdate:
    """What one step of :meth:`LiveSession.serve` did, for the GUI.

    Attributes
    ----------
    tiles : int
        Tile cores written to the store in this step.
    region : Region or None
        Bounding box of the written cores (working pixels); None when nothing was written.
    computed, cached, skipped : int
        How this step's tiles were obtained (predictor, tile cache, tissue filter).
    pending : int
        Cores of the current request not yet finished.
    requested : int
        Cores the current request asked for (for a progress bar).
    generation : int
        The request this step served.
    error : str or None
        A failed batch (its tiles are dropped; the session goes on).
    preview : bool
        This step wrote the coarse pass (``tiles`` counts the cores it painted).
    preview_mpp : float or None
        Pixel size the coarse pass ran at (slide units), with ``preview``.
    """

    tiles: int = 0
    region: Region | None = None
    computed: int = 0
    cached: int = 0
    skipped: int = 0
    pending: int = 0
    requested: int = 0
    generation: int = 0
    error: str | None = None
    preview: bool = False
    preview_mpp: float | None = None

    @property
    def done(self) -> bool:
        """Whether the current request is finished."""
        return self.pending == 0
