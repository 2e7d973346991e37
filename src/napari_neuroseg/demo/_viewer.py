"""Viewer helpers for the demo: waiting on widgets, framing layers, captions, screenshots."""

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-neuroseg"
WINDOW_SIZE = (1880, 1040)
_HIDDEN_CHANNELS = ("pre-contrast", "post-contrast")


class DemoError(RuntimeError):
    """A demo step failed or gave no result in time (the message says which and why)."""


def wait_until(done: Callable[[], bool], *, what: str, timeout: float,
               failed: Callable[[], str | None] = lambda: None,
               status: Callable[[], str] = lambda: "") -> None:
    """Run the Qt event loop until ``done()`` is true.

    Parameters
    ----------
    done : callable
        True once the widget shows its result.
    what : str
        The step, for the error message.
    timeout : float
        Seconds before giving up.
    failed : callable, optional
        Returns an error text once the widget reports a failure (checked before ``done``).
    status : callable, optional
        The widget's status text, quoted in the timeout message.

    Raises
    ------
    DemoError
        On failure or timeout.
    """
    end = time.monotonic() + timeout
    while True:
        QApplication.processEvents()
        message = failed()
        if message:
            raise DemoError(f"{what} failed: {message}")
        if done():
            QApplication.processEvents()
            return
        if time.monotonic() > end:
            now = status()
            raise DemoError(f"{what}: no result after {timeout:.0f} s"
                            + (f" (widget status: {now!r})" if now else ""))
        time.sleep(0.02)


def settle(seconds: float = 0.3) -> None:
    """Let Qt draw for ``seconds`` (layer refreshes, dock layout) before a screenshot."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def new_viewer(title: str, show: bool = True) -> napari.Viewer:
    """A viewer of the demo's fixed window size (``show=True``: screenshots need drawing)."""
    viewer = napari.Viewer(title=title, show=show)
    viewer.window.resize(*WINDOW_SIZE)
    return viewer


def load(viewer: napari.Viewer, sample: str, path: str | Path | None) -> list[Any]:
    """Open ``path`` with the plugin, or the plugin's ``sample``; the layers added."""
    before = set(viewer.layers)
    if path is None:
        viewer.open_sample(PLUGIN, sample)
    else:
        viewer.open(str(path), plugin=PLUGIN)
    return [layer for layer in viewer.layers if layer not in before]


def dock(viewer: napari.Viewer, name: str) -> tuple[Any, Any]:
    """Dock the plugin widget ``name`` (its npe2 display name): ``(dock, widget)``."""
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)


def _world_extent(viewer: napari.Viewer, layer: Any) -> np.ndarray:
    """The layer's extent in the viewer's world units (layers keep their own units)."""
    extent = np.asarray(layer.extent.world, dtype=float)
    factors = [(1 * unit).to(target).magnitude
               for unit, target in zip(layer.units, viewer.dims.units[-layer.ndim:], strict=True)]
    extent = extent * np.asarray(factors)
    pad = viewer.dims.ndim - layer.ndim
    if pad:  # a 2D layer in a 3D viewer spans every z
        extent = np.hstack([np.array([[np.inf] * pad, [-np.inf] * pad]), extent])
    return extent


def focus(viewer: napari.Viewer, layers: Sequence[Any], margin: float = 0.95,
          plane: int | None = None) -> None:
    """Show only ``layers``, framed in the canvas, at ``plane`` (default: the middle slice)."""
    for layer in viewer.layers:
        layer.visible = layer in layers and not layer.name.endswith(_HIDDEN_CHANNELS)
    viewer.layers.selection.active = next((lyr for lyr in layers if lyr.visible), layers[0])
    extents = [_world_extent(viewer, layer) for layer in layers]
    lo = np.min([e[0] for e in extents], axis=0)
    hi = np.max([e[1] for e in extents], axis=0)
    if viewer.dims.ndim > 2:
        if plane is not None:
            viewer.dims.set_current_step(0, plane)
        elif np.isfinite(lo[0]) and hi[0] >= lo[0]:
            point = list(viewer.dims.point)
            point[0] = float((lo[0] + hi[0]) / 2)
            viewer.dims.point = point
    height, width = (hi - lo)[-2:]
    frame(viewer, (lo[-2:] + hi[-2:]) / 2, (height, width), margin)


def frame(viewer: napari.Viewer, center: Sequence[float], size: Sequence[float],
          margin: float = 0.95) -> None:
    """Centre the 2-D camera on ``center`` with a world box of ``size`` (h, w) filling it."""
    canvas_h, canvas_w = viewer.canvas.size
    viewer.scene.camera.center = tuple(float(c) for c in center)
    viewer.scene.camera.zoom = margin * min(canvas_h / size[0], canvas_w / size[1])


def caption(viewer: napari.Viewer, text: str) -> None:
    """Write ``text`` in the canvas's top-left corner (shown in the screenshot)."""
    overlay = viewer.canvas.overlays.text
    overlay.text = text
    overlay.position = "top_left"
    overlay.font_size = 9
    overlay.color = "white"
    overlay.visible = True


def screenshot(viewer: napari.Viewer, path: Path) -> Path:
    """Save the whole window (canvas and docks) as a PNG."""
    settle()
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def save_rgba(image: Any, path: Path) -> Path:
    """Save a screenshot array (``viewer.screenshot``'s RGBA) as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return path


def save_small(source: Path, target: Path, width: int = 1280) -> Path:
    """A small copy of a screenshot for the docs: ``width`` px wide, 256 colours."""
    from PIL import Image

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    if rgb.width > width:
        rgb = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.Resampling.LANCZOS)
    small = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                         dither=Image.Dither.NONE)
    target.parent.mkdir(parents=True, exist_ok=True)
    small.save(target, optimize=True)
    return target
