"""The demo's ``slide-follow`` scene: the Nuclei widget following the view, preview first.

A user pans; the widget first shows the classical hematoxylin watershed of the whole view
("Quick preview first"), then HoVer-Net's nuclei replace it in the same layer. The scene
frames a view of :data:`FOLLOW_VIEW_UM` micrometres, turns "Follow the view" on, waits for
the preview (and keeps a screenshot of it, ``<stem>-preview.png``), then for the model's
result, and captions both with the time since the camera move.
"""

import time
from pathlib import Path
from typing import Any

import napari

from napari_neuroseg.demo._scenes import (
    SceneResult,
    _failed,
    _slide_view_center,
    _slide_with_widget,
    _source,
    weights_text,
)
from napari_neuroseg.demo._viewer import caption, frame, settle, wait_until

FOLLOW_VIEW_UM = 512.0  # the short side of the followed view: 1024 working px at 0.5 µm/px


def follow_scene(viewer: napari.Viewer, path: Path | None, timeout: float) -> SceneResult:
    """Nuclei of the view with "Follow the view": the quick preview, then the model's result.

    Returns
    -------
    SceneResult
        Its ``shots`` hold the screenshot taken while the preview was on screen.
    """
    slide, widget = _slide_with_widget(viewer, path, "Nuclei")
    widget.preview.value = True
    frame(viewer, _slide_view_center(slide), (FOLLOW_VIEW_UM, FOLLOW_VIEW_UM), margin=1.0)
    settle(0.2)
    start = time.monotonic()
    widget.follow.value = True  # runs at once, then after every camera move
    wait_until(lambda: widget.previews > 0 or widget.runs > 0, what="Nuclei preview",
               timeout=timeout, failed=lambda: _failed(widget),
               status=lambda: str(widget.status.value))
    shots: dict[str, Any] = {}
    numbers: dict[str, str] = {}
    source = _source(path, "synthetic slide")
    if widget.runs == 0:  # the preview is on screen: keep it
        preview_s = time.monotonic() - start
        numbers["preview_s"] = f"{preview_s:.1f}"
        caption(viewer, f"{source}: {widget.status.value} ({preview_s:.1f} s after the view "
                "was framed, model loading included)")
        settle(0.2)
        shots["preview"] = viewer.screenshot(canvas_only=False, flash=False)
    wait_until(lambda: widget.runs > 0 and not widget.busy, what="Nuclei following the view",
               timeout=timeout, failed=lambda: _failed(widget),
               status=lambda: str(widget.status.value))
    widget.follow.value = False  # the screenshot's view stays as computed
    model_s = time.monotonic() - start
    result = widget.result
    weights = weights_text(widget.picker)
    shown = (f"the quick preview first after {numbers['preview_s']} s, then"
             if "preview_s" in numbers else "no preview shown before")
    text = (f"{source}: Follow the view: {shown} the model's {result.count} nuclei after "
            f"{model_s:.1f} s ({result.density:.0f}/mm²)\nmodel {weights}")
    caption(viewer, text)
    numbers.update({"model_s": f"{model_s:.1f}", "nuclei": str(result.count)})
    return SceneResult(numbers, weights, text, shots)
