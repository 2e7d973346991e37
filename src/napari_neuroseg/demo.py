"""``python -m napari_neuroseg.demo``: napari with the plugin and a slide, a CT and an MRI loaded.

By default the plugin's synthetic sample data is opened; ``--slide``, ``--ct`` and ``--mri`` open
your own files instead. With ``--exit`` it writes screenshots to ``--out`` and quits (this is what
``make demo`` does when there is no display, under Xvfb).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari
import numpy as np

PLUGIN = "napari-neuroseg"
MODALITIES = ("slide", "ct", "mri")


def _load(viewer: napari.Viewer, key: str, path: str | None) -> list:
    before = set(viewer.layers)
    if path is None:
        viewer.open_sample(PLUGIN, key)
    else:
        viewer.open(path, plugin=PLUGIN)
    return [layer for layer in viewer.layers if layer not in before]


def focus(viewer: napari.Viewer, layers: list, margin: float = 0.95) -> None:
    """Show only ``layers``, framed in the canvas, at the middle slice of a volume."""
    for layer in viewer.layers:
        hidden_channel = layer.name.endswith(("pre-contrast", "post-contrast"))
        layer.visible = layer in layers and not hidden_channel
    lo = np.min([layer.extent.world[0] for layer in layers], axis=0)
    hi = np.max([layer.extent.world[1] for layer in layers], axis=0)
    ndim = viewer.dims.ndim
    lo, hi = lo[-ndim:], hi[-ndim:]
    if ndim > 2:
        middle = list(viewer.dims.point)
        for axis in range(ndim - 2):
            middle[axis] = float((lo[axis] + hi[axis]) / 2)
        viewer.dims.point = middle
    height, width = (hi - lo)[-2:]
    canvas_h, canvas_w = viewer.canvas.size
    viewer.scene.camera.center = tuple((lo[-2:] + hi[-2:]) / 2)
    viewer.scene.camera.zoom = margin * min(canvas_h / height, canvas_w / width)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m napari_neuroseg.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--exit", action="store_true", help="save screenshots, then quit")
    for key in MODALITIES:
        parser.add_argument(f"--{key}", default=None, help=f"open this {key} instead of a sample")
    args = parser.parse_args(argv)

    viewer = napari.Viewer(title="napari-neuroseg demo", show=True)
    viewer.window.resize(1280, 900)
    viewer.window.add_plugin_dock_widget(PLUGIN, "Open image")
    groups = {key: _load(viewer, key, getattr(args, key)) for key in MODALITIES}
    if not args.exit:
        napari.run()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for key, layers in groups.items():
        focus(viewer, layers)
        path = args.out / f"{key}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"demo: {key}: {', '.join(layer.name for layer in layers)} -> {path}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
