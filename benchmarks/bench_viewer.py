"""Live viewer benchmarks (issue 5); writes the ``## Viewer`` section of ``docs/benchmarks.md``.

(a) With a fixed 1280 x 1024 canvas, the time from a camera move to the complete visible
heatmap in the Analyse widget (napari under Xvfb, viewer hidden), with the default slide
model (gbm-tissue-8, random weights: the cost does not depend on the weights) on a 10k x 10k
and a 100k x 100k synthetic slide, and the longest event-loop stall (a 10 ms QTimer heartbeat)
while it runs. The slides are lazy in-memory pyramids of a repeated synthetic H&E texture
(no file: the cost of decoding a 100k x 100k TIFF is the reader's benchmark, not this one).
(b) Peak RSS of a subprocess that pans a LiveSession across 100 views of the 100k x 100k
slide (a cheap per-pixel predictor: the model's memory does not grow with panning).

(c) ``--first``: time to the first result for the whole screen and to the complete result
after a camera move, for the tissue model (Analyse, coarse pass first) and the nuclei model
(Nuclei, classical preview first), on the 10k and 100k synthetic slides and a real SVS
(``benchmarks/_first_result.py``); writes the ``## Live view: first result`` section.

Run ``python benchmarks/bench_viewer.py`` (``--no-write`` to only print; ``--zoom`` screen
pixels per working pixel, default 1). Re-executes itself under ``xvfb-run`` without a display.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _doc import Row, write_section
from _first_result import first_section, run_first
from _stalls import StallSampler

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Viewer"
FIRST_SECTION = "## Live view: first result"
CANVAS = (1024, 1280)
MODEL = "gbm-tissue-8"
#: First view centre and the move, in µm (inside the 10k slide: 5000 µm at 0.5 µm/px).
START, MOVE = 2048.0, 1536.0
MB = 2**20


class PeriodicLevel:
    """A lazy RGB pyramid level: a synthetic H&E texture repeated (slices built on demand)."""

    def __init__(self, shape: tuple[int, int], texture: np.ndarray) -> None:
        self.shape = (*shape, 3)
        self.ndim, self.dtype, self.texture = 3, np.dtype(np.uint8), texture
        self.size = shape[0] * shape[1] * 3

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        ys, xs = (list(key) + [slice(None)] * 2)[:2]
        ys = ys if isinstance(ys, slice) else slice(ys, ys + 1)
        xs = xs if isinstance(xs, slice) else slice(xs, xs + 1)
        iy = np.arange(*ys.indices(self.shape[0])) % self.texture.shape[0]
        ix = np.arange(*xs.indices(self.shape[1])) % self.texture.shape[1]
        out = self.texture[iy[:, None], ix[None, :]]
        return out[(slice(None), slice(None), *key[2:])] if len(key) > 2 else out

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


def lazy_slide(side: int, mpp: float = 0.5):
    """A LazyImage pyramid of ``side`` x ``side`` pixels at ``mpp`` µm/px."""
    from napari_neuroseg.io import LazyImage
    from napari_neuroseg.samples._slide_texture import he_region

    levels, d = [], 1
    while True:
        texture = he_region(0, 0, 2048 // d, 2048 // d, downsample=d, size=(2048, 2048))
        levels.append(PeriodicLevel((side // d, side // d), np.asarray(texture, np.uint8)))
        if side // d <= 1024:
            break
        d *= 2
    return LazyImage(levels=levels, axes="yxc", scale=(mpp, mpp), unit="um",
                     name=f"synthetic {side}", modality="slide", source=f"synthetic-{side}",
                     display={"rgb": True})


def gui_timings(sides: list[int], zoom: float) -> dict:
    """Camera move -> complete visible heatmap, and the longest stall, per slide (in napari)."""
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_neuroseg.io.layers import layer_kwargs
    from napari_neuroseg.widgets.analyse_widget import AnalyseWidget

    app = QApplication.instance() or QApplication([])
    out = {}
    for side in sides:
        viewer = napari.Viewer(show=False)
        image = lazy_slide(side)
        layer = viewer.add_image(image.levels, **layer_kwargs(image))
        viewer.canvas.size = CANVAS
        widget = AnalyseWidget(viewer)
        widget.layer.value = layer
        widget.picker.model.value = MODEL
        widget.picker.device.value = "cpu"
        camera = viewer.scene.camera
        camera.zoom = zoom  # world is µm; the model works at 1 µm/px
        beats: list[float] = []
        sampler = StallSampler()
        timer = QTimer()
        timer.timeout.connect(lambda beats=beats, s=sampler: (beats.append(time.perf_counter()),
                                                              s.beat()))

        def wait_done(widget=widget):
            while widget.session is None or widget.session.pending or len(widget.session.queue):
                app.processEvents()
                time.sleep(0.002)
            end = time.perf_counter() + 0.1  # the last refresh
            while time.perf_counter() < end:
                app.processEvents()

        # Both slides show the same place (same tiles, same texture phase): what differs is
        # only the slide's size, which the cost should not follow.
        camera.center = (START, START)
        widget.live.value = True
        wait_done()  # model load, slide plan, first view (warm-up)
        before = dict(widget.counts)
        generation = widget.session.queue.generation
        timer.start(10)
        sampler.start()
        camera.center = (START + MOVE, START + MOVE)  # a new view (the canvas is 1280 µm)
        t0 = time.perf_counter()
        while widget.session.queue.generation == generation:  # the debounced request
            app.processEvents()
            time.sleep(0.002)
        wait_done()
        elapsed = time.perf_counter() - t0
        timer.stop()
        sampler.stop()
        counts = {k: v - before[k] for k, v in widget.counts.items()}
        out[side] = {"seconds": elapsed, "stall_ms": 1000 * float(np.diff(beats).max()),
                     "tiles": counts, "notes": widget.session.plan.notes,
                     "stalled_in": sampler.report(), "workers_then": sampler.report_others()}
        widget.close()
        viewer.close()
    return out


def pan_rss(n_views: int = 100) -> dict:
    """Pan a LiveSession across ``n_views`` views of the 100k slide (run in a subprocess)."""
    from napari_neuroseg.analysis import plan_slide
    from napari_neuroseg.engine import TileCache
    from napari_neuroseg.live import LiveSession, visible_box
    from napari_neuroseg.models import ModelRegistry

    spec = ModelRegistry().get(MODEL)

    def predictor(batch):
        p = 1 - batch.mean(axis=1, keepdims=True) / 255.0
        return np.repeat(p / 8, 8, axis=1).astype(np.float32)

    plan = plan_slide(lazy_slide(100_000), spec, stain_normalization=False, tissue_only=False)
    session = LiveSession(plan, predictor, "cheap", cache=TileCache(64 * MB), batch_size=16)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    for i in range(n_views):
        c = 2000.0 + 480.0 * i  # a diagonal across the slide, views every ~680 µm
        box = visible_box((c, c), 1.0, CANVAS)
        session.request(box)
        for _ in session.serve(should_stop=lambda: len(session.queue) == 0):
            pass
        region = session.working_region(box)
        session.store.heatmap_views(1)[0][region.slices]  # what napari would read
    return {"views": n_views, "tiles": session.done_tiles,
            "seconds": time.perf_counter() - t0, "rss_start_mb": rss_start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "store_mb": session.store.nbytes_stored / MB}


def summarise(runs: list[tuple[int, dict]]) -> dict:
    """Per slide: the mean time of its runs, their range, and the run with the longest stall."""
    out = {}
    for side in sorted({side for side, _ in runs}):
        mine = [r for s, r in runs if s == side]
        seconds = [r["seconds"] for r in mine]
        worst = max(mine, key=lambda r: r["stall_ms"])
        out[side] = {**worst, "seconds": float(np.mean(seconds)), "all_seconds": seconds}
    return out


def rows(gui: dict, pan: dict, zoom: float) -> list[Row]:
    t10, t100 = gui[10_000]["seconds"], gui[100_000]["seconds"]
    out = []
    for i, (side, g) in enumerate(gui.items(), 1):
        runs = ", ".join(f"{t:.1f}" for t in g["all_seconds"])
        out.append(Row(f"V{i}", f"camera move -> complete visible heatmap, {side // 1000}k x "
                       f"{side // 1000}k synthetic slide", f"{g['seconds']:.1f} s", "",
                       f"mean of {len(g['all_seconds'])} runs ({runs} s); "
                       f"{g['tiles']['computed']} tiles computed, {g['tiles']['skipped']} "
                       "skipped (no tissue)"))
    n10, n100 = (max(1, gui[s]["tiles"]["computed"]) for s in (10_000, 100_000))
    pairs = [b / a for a, b in zip(gui[10_000]["all_seconds"], gui[100_000]["all_seconds"],
                                   strict=False)]
    out.append(Row("V3", "100k / 10k time ratio", f"{t100 / t10:.2f}", "<= 1.2",
                   f"run by run: {', '.join(f'{r:.2f}' for r in pairs)}; per computed tile: "
                   f"{(t100 / n100) / (t10 / n10):.2f}"))
    side, worst = max(gui.items(), key=lambda item: item[1]["stall_ms"])
    places = "; ".join(f"{where} {seconds:.2f} s" for where, seconds in worst["stalled_in"][:3])
    out.append(Row("V4", "longest event-loop stall during live inference",
                   f"{worst['stall_ms']:.0f} ms", "~100 ms",
                   f"{side // 1000}k slide, worst of all runs; main thread sampled while late "
                   f"(> 50 ms): {places or 'never'}"))
    out.append(Row("V5", f"peak RSS after panning {pan['views']} views of 100k x 100k",
                   f"{pan['peak_rss_mb']:.0f} MB", "bounded",
                   f"{pan['rss_start_mb']:.0f} MB before panning; {pan['tiles']} tiles, "
                   f"store {pan['store_mb']:.0f} MB on disk, {pan['seconds']:.0f} s"))
    return out


V3_HISTORY = (
    " V3 history: 1.53 in the first runs (both slides in one process, 10k first). Two causes"
    " were found with a sampling profiler (py-spy). The tissue mask came from each slide's"
    " smallest level (8 against 64 µm/px), so the two slides skipped different tiles; it is"
    " now made at 16 µm/px on every slide (`slide_tissue_mask_at`). And layer data that is"
    ' not a dask array was wrapped with dask\'s 128 MB "auto" chunks, so each batch of tiles'
    " read whole 6688 x 6688 chunks of the 100k slide (5000 x 5000 on the 10k); such data now"
    " gets 512-pixel chunks (`io.layers.lazy_level`), which also made both slides"
    " faster. Each slide now runs in its own process, in the order 10k, 100k, 100k, 10k.")

STALL_NOTE = (
    "Both slides show the same place (same tiles, same texture), so V3 compares only the "
    "slides' sizes. V4 history: 439 ms, then 300 ms once napari no longer read the results "
    "through zarr's event loop on the GUI thread (an in-memory mirror of recent chunks, "
    "`live/mirror.py`; the stall sampler, `benchmarks/_stalls.py`, had found the main thread "
    "waiting there), then the remaining 230-300 ms stalls turned out to be Python's full "
    "garbage collections of napari's ~450,000 objects (measured with `gc.callbacks`: 230-245 "
    "ms each, GIL held); the Analyse widget now holds a counted `gc.freeze()` while a live "
    "session runs (`widgets/_gc.py`)." + V3_HISTORY)


def section(table: list[Row], zoom: float) -> str:
    lines = [SECTION, "",
             f"`python benchmarks/bench_viewer.py` on {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, no GPU; {MODEL} with random weights on the CPU, "
             f"Macenko and tissue skipping on; canvas {CANVAS[1]} x {CANVAS[0]}, zoom {zoom:g} "
             "screen px per µm (the model works at 1 µm/px). Slides are lazy synthetic "
             "pyramids (a repeated H&E-like texture, 0.5 µm/px). The pan uses a per-pixel "
             "numpy predictor: it measures the live machinery (queue, cache, zarr store), not "
             "the network.", "",
             "| id | what | result | goal | notes |", "|---|---|---|---|---|"]
    lines += [f"| {r.id} | {r.what} | {r.result} | {r.goal} | {r.notes} |" for r in table]
    lines += ["", STALL_NOTE]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--zoom", type=float, default=1.0)
    parser.add_argument("--pan-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gui-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs per slide, alternating the order (default 2)")
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--pan-json", help="reuse a pan result (JSON) instead of panning again")
    parser.add_argument("--first", action="store_true",
                        help="only the first-result / complete-result table (section 'Live "
                             "view: first result')")
    parser.add_argument("--first-one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_one:
        from _first_result import measure

        print(json.dumps(measure(*args.first_one)), flush=True)
        return
    if args.pan_only:
        print(json.dumps(pan_rss(args.views)))
        return
    if args.gui_only:
        print(json.dumps(gui_timings([args.gui_only], args.zoom)[args.gui_only], default=str),
              flush=True)
        return
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1200x24", sys.executable, *sys.argv]
        raise SystemExit(subprocess.call(cmd))
    if args.first:
        text = first_section(run_first(__file__, args.rounds))
        print(text)
        if not args.no_write:
            write_section(DOC, FIRST_SECTION, text)
        return
    if args.pan_json:
        pan = json.loads(args.pan_json)
    else:
        run = subprocess.run([sys.executable, __file__, "--pan-only", "--views", str(args.views)],
                             capture_output=True, text=True, check=True)
        pan = json.loads(run.stdout.strip().splitlines()[-1])
    print("pan:", pan)
    order = [10_000, 100_000]
    runs = []
    for round_ in range(args.rounds):
        for side in order if round_ % 2 == 0 else order[::-1]:
            run = subprocess.run([sys.executable, __file__, "--gui-only", str(side),
                                  "--zoom", str(args.zoom)],
                                 capture_output=True, text=True, check=True, timeout=900)
            runs.append((side, json.loads(run.stdout.strip().splitlines()[-1])))
            print(f"gui {side}: {runs[-1][1]['seconds']:.1f} s", flush=True)
    gui = summarise(runs)
    text = section(rows(gui, pan, args.zoom), args.zoom)
    print(text)
    if not args.no_write:
        write_section(DOC, SECTION, text)


if __name__ == "__main__":
    main()
