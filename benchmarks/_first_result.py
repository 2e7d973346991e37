"""Time to the first result and to the complete result after a camera move, in napari.

Used by ``benchmarks/bench_viewer.py --first``. One measurement runs in its own process
(``--first-one WIDGET SLIDE``): napari under Xvfb with the viewer hidden and a fixed
1280 x 1024 canvas, one slide, one widget, at 1 screen pixel per working pixel of the model:

- ``analyse``: the Analyse widget in live mode with the LGG tissue model (10 µm/px). The first
  result is the coarse pass painted over the whole view (the model on a coarser grid); the
  complete result is every tile on screen refined (the 10 % margin is timed apart). A slide
  that fits on the screen is measured as a new layer of it analysed from scratch.
- ``nuclei``: the Nuclei widget following the view with HoVer-Net (0.5 µm/px). The first
  result is the classical hematoxylin preview of the whole view; the complete one is the
  model's instances shown.

Both clocks start at the camera move, so they include the widgets' debounce (100 ms for
Analyse, 250 ms for Nuclei). A first view is analysed before the clock (model load, backend
export, slide plan). The longest gap of a 10 ms QTimer heartbeat is the UI stall.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

CANVAS = (1024, 1280)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The real slide: an Aperio SVS with its µm/px in the header (0.499).
SVS = DATA / "wsi" / "cmu-1-small-region.svs"
MODELS = {"analyse": "lgg-tissue", "nuclei": "nuclei-hovernet"}


def _slide(name: str) -> Any:
    """A LazyImage: ``"10k"`` / ``"100k"`` synthetic pyramids, or ``"svs"``."""
    if name == "svs":
        from napari_neuroseg.io import open_image

        return open_image(SVS)[0]
    from bench_viewer import lazy_slide

    return lazy_slide(int(name.rstrip("k")) * 1000)


def _views(image: Any, working_mpp: float) -> tuple[tuple[float, float], tuple[float, float],
                                                     float]:
    """First view centre, second view centre (world units) and the 1:1 camera zoom."""
    height, width = (s * m for s, m in zip(image.levels[0].shape[:2], image.scale,
                                            strict=False))
    zoom = 1.0 / working_mpp  # screen px per world unit: one screen px per working px
    view_h, view_w = CANVAS[0] / zoom, CANVAS[1] / zoom
    if height <= view_h and width <= view_w:  # all of it on screen: no pan shows more
        centre = (height / 2, width / 2)
        return centre, centre, zoom
    if height <= 2 * view_h or width <= 2 * view_w:  # a small slide: shift by a third
        first = (height / 2 - view_h / 3, width / 2 - view_w / 3)
        second = (height / 2 + view_h / 3, width / 2 + view_w / 3)
    else:  # a big one: a new view that shares nothing with the first
        first = (0.25 * height, 0.25 * width)
        second = (first[0] + 1.2 * view_h, first[1] + 1.2 * view_w)
    return first, second, zoom


def measure(widget_kind: str, slide_name: str) -> dict:
    """One camera move on one slide with one widget; times in seconds from the move."""
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_neuroseg.io.layers import layer_kwargs
    from napari_neuroseg.models import ModelRegistry

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=False)
    image = _slide(slide_name)
    layer = viewer.add_image(image.levels, **layer_kwargs(image))
    viewer.canvas.size = CANVAS
    spec = ModelRegistry().get(MODELS[widget_kind])
    first, second, zoom = _views(image, float(spec.input.resolution))
    camera = viewer.scene.camera
    camera.zoom = zoom
    camera.center = first
    events: list[tuple[float, str]] = []
    if widget_kind == "analyse":
        from napari_neuroseg.widgets.analyse_widget import AnalyseWidget

        widget = AnalyseWidget(viewer)
        on_update = widget._on_update

        def record(update: Any) -> None:
            on_update(update)
            events.append((time.perf_counter(), "preview" if update.preview else "tiles"))

        widget._on_update = record  # connected when the session starts
    else:
        from napari_neuroseg.widgets.nuclei_widget import NucleiWidget

        widget = NucleiWidget(viewer)
    widget.layer.value = layer
    widget.picker.model.value = MODELS[widget_kind]
    widget.picker.device.value = "cpu"

    def pump(until: Any, timeout: float = 600.0) -> None:
        end = time.perf_counter() + timeout
        while not until():
            if time.perf_counter() > end:
                raise TimeoutError(f"{widget_kind} on {slide_name}: no result in {timeout} s")
            app.processEvents()
            time.sleep(0.002)

    switch = widget_kind == "analyse" and first == second
    if widget_kind == "analyse":
        def idle() -> bool:
            s = widget.session
            return s is not None and not s.pending and not len(s.queue)

        widget.live.value = True
        pump(idle)  # the warm-up view
        session = widget.session

        def done() -> bool:
            s = widget.session
            return s is not session and s is not None and s.queue.generation > 0 and idle()

        if not switch:
            from napari_neuroseg.live import visible_box

            generation = session.queue.generation
            screen = visible_box(second, zoom, viewer.canvas.size)  # no margin
            keys = {t.key for t in session.grid.tiles_in(session.working_region(screen),
                                                          blended=False)}

            def done() -> bool:  # every core on screen refined (the margin may still run)
                if session.queue.generation == generation:
                    return False
                with session._lock:
                    finished = keys <= session._done
                if finished and not any(e == "screen" for _, e in events):
                    events.append((time.perf_counter(), "screen"))
                return idle()
        before = dict(widget.counts)
    else:
        widget.follow.value = True  # runs at once
        pump(lambda: widget.runs >= 1 and not widget.busy)
        runs, previews = widget.runs, widget.previews

        def done() -> bool:
            if widget.previews > previews and not any(e == "preview" for _, e in events):
                events.append((time.perf_counter(), "preview"))
            return widget.runs > runs and not widget.busy

    events.clear()
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    t0 = time.perf_counter()
    if switch:  # the whole slide is on screen: the same slide as a new layer, analysed anew
        from napari_neuroseg.engine import TileCache

        widget.cache = TileCache(max_bytes=256 * 2**20)  # nothing computed yet
        widget.layer.value = viewer.add_image(image.levels, **layer_kwargs(image))
    else:
        camera.center = second
    pump(done)
    complete = time.perf_counter() - t0
    settle = time.perf_counter() + 0.15  # the last layer refresh
    while time.perf_counter() < settle:
        app.processEvents()
    timer.stop()
    preview = [t - t0 for t, kind in events if kind == "preview"]
    screen = [t - t0 for t, kind in events if kind == "screen"]
    out = {"widget": widget_kind, "slide": slide_name, "model": MODELS[widget_kind],
           "first_s": preview[0] if preview else complete,
           "complete_s": screen[0] if screen else complete, "with_margin_s": complete,
           "preview": bool(preview), "stall_ms": 1000 * float(np.diff([t0, *beats]).max()),
           "zoom": zoom, "backend": _backend(widget)}
    if widget_kind == "analyse":
        out["tiles"] = {k: v - (0 if switch else before[k]) for k, v in widget.counts.items()}
        out["event"] = "new layer of the slide" if switch else "camera move"
    else:
        counts = widget.result.counts
        out["tiles"] = {"computed": counts.computed, "cached": counts.cached,
                        "skipped": counts.skipped}
        out["region"] = list(widget.result.working_region.shape)
        out["event"] = "camera move"
    widget.close()
    viewer.close()
    return out


def _backend(widget: Any) -> str:
    """The network backend the widget's model runs on (``"?"`` when it cannot tell)."""
    for owner in (getattr(widget, "session", None), getattr(widget, "loaded", None)):
        runner = getattr(owner, "predictor", None) or getattr(owner, "runner", None)
        network = getattr(runner, "network", None)
        backend = getattr(network, "backend", None) or getattr(runner, "backend", None)
        if backend:
            return str(backend)
    return "?"


CASES = [("analyse", "10k"), ("analyse", "100k"), ("analyse", "svs"),
         ("nuclei", "10k"), ("nuclei", "100k"), ("nuclei", "svs")]
GOALS = {"first_s": 1.0, "complete_s": 5.0, "stall_ms": 100.0}


def run_first(script: str, rounds: int) -> dict:
    """Every case ``rounds`` times, each in a fresh process; the runs per case."""
    import json
    import os
    import subprocess
    import sys

    out: dict = {}
    for round_ in range(rounds):
        for case in CASES if round_ % 2 == 0 else CASES[::-1]:
            run = subprocess.run([sys.executable, script, "--first-one", *case],
                                 capture_output=True, text=True, timeout=1200)
            if run.returncode:
                raise RuntimeError(f"{case}: {run.stderr[-2000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            result["load"] = os.getloadavg()[0]
            out.setdefault(case, []).append(result)
            print(case, {k: result[k] for k in ("first_s", "complete_s", "stall_ms")},
                  flush=True)
    return out


def _met(value: float, goal: float) -> str:
    return "met" if value <= goal else "not met"


def first_section(runs: dict) -> str:
    """The markdown section: one row per widget and slide, medians of the runs."""
    import os
    import platform

    loads = [r["load"] for rs in runs.values() for r in rs]
    lines = ["## Live view: first result", "",
             f"`python benchmarks/bench_viewer.py --first` on {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, no GPU (1-minute load average during the runs "
             f"{min(loads):.1f}-{max(loads):.1f}). napari under Xvfb, canvas {CANVAS[1]} x "
             f"{CANVAS[0]}, one screen pixel per working pixel of the model; the clocks start "
             "at the camera move (debounce included: 100 ms Analyse, 250 ms Nuclei) after a "
             "first view has been analysed (model loaded, backend exported, slide planned). "
             "Tissue: the Analyse widget live with lgg-tissue (10 µm/px, Macenko and tissue "
             "skipping on); first result = the coarse pass painted over the whole view; "
             "complete = every tile on screen refined (the 10 % margin around the screen, "
             "computed last, is in the notes). "
             "Nuclei: the Nuclei widget following the view with nuclei-hovernet (0.5 µm/px); "
             "first result = the classical hematoxylin preview of the whole view. Synthetic "
             "slides are lazy pyramids of a repeated H&E-like texture at 0.5 µm/px; the SVS "
             f"is `{SVS.name}` (2967 x 2220 px, 0.499 µm/px). Median of {len(loads) // len(runs)}"
             " runs per row, each in a fresh process; goals: first <= 1.0 s, complete <= "
             "5 s, stall < 100 ms.", "",
             "| id | widget, model | slide | first result | complete | longest UI stall | "
             "tiles computed | backend | goals |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, ((widget, slide), rs) in enumerate(runs.items(), 1):
        med = {k: float(np.median([r[k] for r in rs])) for k in GOALS}
        met = ", ".join(f"{name} {_met(med[k], GOALS[k])}" for k, name in
                        (("first_s", "first"), ("complete_s", "complete"),
                         ("stall_ms", "stall")))
        first = f"{med['first_s']:.2f} s" + ("" if rs[0]["preview"] else " (no preview)")
        runs_text = ", ".join(f"{r['first_s']:.2f}/{r['complete_s']:.2f}" for r in rs)
        if widget == "analyse":
            margin = float(np.median([r["with_margin_s"] for r in rs]))
            runs_text += f"; with the margin {margin:.2f} s"
        if rs[0].get("event") != "camera move":
            runs_text += f"; measured on: {rs[0]['event']} (the whole slide is on screen)"
        lines.append(f"| L{i} | {widget}, {rs[0]['model']} | {slide} | {first} | "
                     f"{med['complete_s']:.2f} s | {med['stall_ms']:.0f} ms | "
                     f"{rs[0]['tiles']['computed']} | {rs[0]['backend']} | {met}; runs "
                     f"(first/complete s): {runs_text} |")
    return "\n".join(lines) + "\n"
