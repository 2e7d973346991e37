"""Live analysis of what is on screen: the visible box, tile sessions, tile-sparse results.

Pure Python over the engine: no napari, no Qt. The widgets turn the viewer's camera into
numbers and call these.
"""

from napari_neuroseg.live.session import LiveSession
from napari_neuroseg.live.store import ResultStore
from napari_neuroseg.live.update import LiveUpdate, ViewTooLarge
from napari_neuroseg.live.viewport import Box, box_to_pixels, visible_box

__all__ = [
    "Box",
    "LiveSession",
    "LiveUpdate",
    "ResultStore",
    "ViewTooLarge",
    "box_to_pixels",
    "visible_box",
]
