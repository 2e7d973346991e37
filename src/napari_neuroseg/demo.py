"""``python -m napari_neuroseg.demo``: napari with the plugin and a slide, a CT and an MRI loaded.

By default the plugin's synthetic sample data is opened; ``--slide``, ``--ct`` and ``--mri`` open
your own files instead. With ``--exit`` it writes one screenshot per modality to ``--out`` (the
Open widget showing that image's metadata) and quits: this is what ``make demo`` does when there
is no display, under Xvfb.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-neuroseg"
MODALITIES = ("slide", "ct", "mri")
_HIDDEN_CHANNELS = ("pre-contrast", "post-contrast")


def _load(viewer: napari.Viewer, key: str, path: str | None) -> list:
    before = set(viewer.layers)
    if path is None:
        viewer.open_sample(PLUGIN, key)
    else:
        viewer.open(path, plugin=PLUGIN)
    return [layer for layer in viewer.layers if layer not in before]


def _wait(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def _world_extent(viewer: napari.Viewer, layer) -> np.ndarray:
    """The layer's extent in the viewer's world units (layers keep their own units)."""
    extent = np.asarray(layer.extent.world, dtype=float)
    factors = [
        (1 * unit).to(target).magnitude
        for unit, target in zip(layer.units, viewer.dims.units[-layer.ndim :], strict=True)
    ]
    extent = extent * np.asarray(factors)
    pad = viewer.dims.ndim - layer.ndim
    if pad:  # a 2D layer in a 3D viewer spans every z
        extent = np.hstack([np.array([[np.inf] * pad, [-np.inf] * pad]), extent])
    return extent


def focus(viewer: napari.Viewer, layers: list, margin: float = 0.95) -> None:
    """Show only ``layers``, framed in the canvas, at the middle slice of a volume."""
    for layer in viewer.layers:
        layer.visible = layer in layers and not layer.name.endswith(_HIDDEN_CHANNELS)
    viewer.layers.selection.active = next((lyr for lyr in layers if lyr.visible), layers[0])
    ndim = viewer.dims.ndim
    extents = [_world_extent(viewer, layer) for layer in layers]
    lo = np.min([e[0] for e in extents], axis=0)
    hi = np.max([e[1] for e in extents], axis=0)
    if ndim > 2:
        point = list(viewer.dims.point)
        for axis in range(ndim - 2):
            if np.isfinite(lo[axis]) and hi[axis] >= lo[axis]:
                point[axis] = float((lo[axis] + hi[axis]) / 2)
        viewer.dims.point = point
    height, width = (hi - lo)[-2:]
    canvas_h, canvas_w = viewer.canvas.size
    viewer.scene.camera.center = tuple((lo[-2:] + hi[-2:]) / 2)
    viewer.scene.camera.zoom = margin * min(canvas_h / height, canvas_w / width)


def show_metadata(widget, layers: list) -> None:
    """Point the Open widget at the file behind ``layers`` and wait for its metadata."""
    source = Path(layers[0].metadata["neuroseg"]["source"])
    widget.folder.value = source.is_dir()
    widget.path.value = source
    _wait(lambda: widget.status.value.endswith("ready to open") or widget.status.value == "Failed")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m napari_neuroseg.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--exit", action="store_true", help="save screenshots, then quit")
    for key in MODALITIES:
        parser.add_argument(f"--{key}", default=None, help=f"open this {key} instead of a sample")
    args = parser.parse_args(argv)

    viewer = napari.Viewer(title="napari-neuroseg demo", show=True)
    viewer.window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Open image")
    groups = {key: _load(viewer, key, getattr(args, key)) for key in MODALITIES}
    if not args.exit:
        napari.run()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for key, layers in groups.items():
        focus(viewer, layers)
        show_metadata(widget, layers)
        path = args.out / f"{key}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"demo: {key}: {', '.join(layer.name for layer in layers)} -> {path}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
