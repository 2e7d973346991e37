"""Engine benchmarks (issue 3); writes the ``## Engine`` section of ``docs/benchmarks.md``.

(a) Whole-image throughput of :func:`predict_region` with a :class:`ModelRunner` against
MONAI's ``sliding_window_inference`` with the same network, patch, overlap, weights and batch
size (network evaluations counted, outputs compared), and the gain from tissue skipping on
the real SVS slides in ``../shared/data/wsi`` (skipped when absent);
(b) peak RSS while predicting the same region size of a 10k x 10k and a 50k x 50k lazy
synthetic slide with the zarr aggregator, each in its own subprocess;
(c) staintools Macenko per tile against the vectorised normaliser (``bench_stain.py``).

Run ``python benchmarks/bench_engine.py`` (``--no-write`` to only print, ``--device cuda`` on a
machine with CUDA). Needs the ``bench`` extra (MONAI, psutil).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from _doc import Row, write_section
from torch import nn

from napari_neuroseg.engine import (
    EngineOptions,
    Region,
    TileGrid,
    ZarrAggregator,
    blend_weights,
    predict_region,
)
from napari_neuroseg.io.slide import read_slide
from napari_neuroseg.models import InputSpec, ModelRegistry, ModelRunner, ModelSpec
from napari_neuroseg.models.device import autocast
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.samples.slide import write_synthetic_slide

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Engine"
WSI = REPO.parent / "shared" / "data" / "wsi"
PATCH, OVERLAP, BATCH, BLEND = 256, 64, 8, "gaussian"  # halo 0: MONAI has no halo
SVS_MAX_SIDE = 3000  # largest level of a real slide that is predicted whole (run time)
RSS_SLIDES = (10_000, 50_000)
MB = 2**20




class Timing(NamedTuple):
    """One timed run: wall time, network images and calls, and time inside the network."""

    seconds: float
    images: int
    calls: int
    network_s: float


@dataclass
class Report:
    """Rows of the table plus the figures the explanations quote."""

    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


# --- (a) throughput against MONAI --------------------------------------------------------


def bench_spec() -> ModelSpec:
    """A small U-Net (registry architecture ``unet``) on RGB patches; random weights."""
    return ModelSpec(
        name="bench-unet-small",
        task="semantic_segmentation",
        architecture="unet",
        arch_kwargs={"in_channels": 3, "out_channels": 2, "depth": 4, "base_features": 8},
        input=InputSpec(
            channels=("R", "G", "B"),
            normalization={"kind": "range", "scale": 255.0},
            patch_size=(PATCH, PATCH),
            resolution=1.0,
        ),
        classes=("background", "foreground"),
        colors=("#000000", "#ffff00"),
        output="probabilities",
        description="Benchmark model: random weights, outputs mean nothing.",
    )


class EvalCounter:
    """Counts the images a network gets and the time spent inside it (forward hooks, removed
    on leaving the ``with`` block)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.images, self.calls, self.seconds, self._start = 0, 0, 0.0, 0.0
        self._model = model
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._handles: list[Any] = []

    def __enter__(self) -> EvalCounter:
        self._handles = [self._model.register_forward_pre_hook(self._before),
                         self._model.register_forward_hook(self._after)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _before(self, module: nn.Module, args: tuple) -> None:
        self._sync()
        self.images += int(args[0].shape[0])
        self.calls += 1
        self._start = time.perf_counter()

    def _after(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start

    def take(self) -> tuple[int, int, float]:
        """(images, calls, seconds in the network) since the last take; resets them."""
        counts = (self.images, self.calls, self.seconds)
        self.images, self.calls, self.seconds = 0, 0, 0.0
        return counts


def monai_predictor(runner: ModelRunner) -> Callable[[torch.Tensor], torch.Tensor]:
    """The runner's network as MONAI calls it: tensors in and out, with the normalisation,
    device handling and softmax of :class:`ModelRunner` but not its NumPy round trip."""
    norm = runner.spec.input.normalization

    def predict(x: torch.Tensor) -> torch.Tensor:
        x = normalize(x.to(runner.device), norm)
        if runner.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(runner.device, enabled=runner.amp):
            return torch.softmax(runner.model(x).float(), dim=1)

    return predict


def monai_input(image: np.ndarray) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """The image reflect-padded so that MONAI's windows are exactly the engine's patches.

    The engine's tile ``i`` reads ``[i * stride - OVERLAP / 2, ...)`` (reflected past the
    border); MONAI's window ``i`` starts at ``i * stride`` and its last one ends at the
    border. Returns the ``(1, 3, H', W')`` float32 tensor and the slices of the image in it.
    """
    stride, before = PATCH - OVERLAP, OVERLAP // 2
    pads = [(before, -(-n // stride) * stride + OVERLAP - before - n) for n in image.shape[:2]]
    padded = np.pad(image, [*pads, (0, 0)], mode="reflect")
    tensor = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1), np.float32))
    ys, xs = (slice(before, before + n) for n in image.shape[:2])
    return tensor[None], (ys, xs)


def _engine_run(image: Any, runner: ModelRunner, *, region: Region | None = None,
                tile_filter: Callable[[Any], bool] | None = None) -> Any:
    options = EngineOptions(patch_size=PATCH, halo=0, overlap=OVERLAP, batch_size=BATCH,
                            blend=BLEND, tile_filter=tile_filter)
    return predict_region(image, runner, options, region=region)


def _monai_run(tensor: torch.Tensor, runner: ModelRunner, crop: tuple[slice, slice]
               ) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    weights = torch.from_numpy(blend_weights((PATCH, PATCH), BLEND))
    with torch.inference_mode():
        out = sliding_window_inference(
            tensor, (PATCH, PATCH), BATCH, monai_predictor(runner), overlap=OVERLAP / PATCH,
            roi_weight_map=weights, sw_device=runner.device, device="cpu",
        )
    return out[0][(slice(None), *crop)].numpy()


def _warm_up(lazy: Any, tensor: torch.Tensor, runner: ModelRunner) -> None:
    """One window through each path (imports, thread pools, first-call allocations)."""
    _engine_run(lazy, runner, region=Region(0, 0, PATCH, PATCH))
    _monai_run(tensor[..., :PATCH, :PATCH], runner, (slice(None), slice(None)))


def _best_of(
    calls: dict[str, Callable[[], Any]], repeats: int, counter: EvalCounter
) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Each call's best round and last output; calls interleaved in rotating order."""
    best: dict[str, Timing] = {}
    outputs: dict[str, Any] = {}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            counter.take()
            start = time.perf_counter()
            outputs[name] = calls[name]()
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name].seconds:
                best[name] = Timing(seconds, *counter.take())
    return best, outputs


def bench_throughput(folder: Path, runner: ModelRunner, size: int, repeats: int) -> Report:
    """(a) One synthetic slide, whole image: engine (lazy and in memory) vs MONAI, the same
    torch network in both; and the engine with its CPU default backend on the lazy slide."""
    path = write_synthetic_slide(folder / "throughput.tif", size=(size, size))
    lazy = read_slide(path).levels[0]
    start = time.perf_counter()
    array = np.asarray(lazy.compute())
    tensor, crop = monai_input(array)
    load_s = time.perf_counter() - start
    _warm_up(lazy, tensor, runner)
    fast = ModelRunner(runner.model, runner.spec, device=runner.device, amp=runner.amp,
                       batch_size=BATCH, backend="auto")
    default = f"engine, lazy slide, default backend ({fast.backend})"
    _engine_run(lazy, fast, region=Region(0, 0, PATCH, PATCH))  # export + compile, once
    calls = {
        "engine, lazy slide": lambda: _engine_run(lazy, runner).probabilities,
        "engine, numpy in memory": lambda: _engine_run(array, runner).probabilities,
        "MONAI, tensor in memory": lambda: _monai_run(tensor, runner, crop),
        default: lambda: _engine_run(lazy, fast).probabilities,
    }
    with EvalCounter(runner.model, runner.device) as counter:
        best, outputs = _best_of(calls, repeats, counter)
    tiles = int(np.prod(TileGrid((size, size), PATCH, 0, OVERLAP).n_tiles))
    report = Report()
    for name, (seconds, evals, _, in_net) in best.items():
        note = (f"best of {repeats}; {evals} network evaluations; {in_net:.1f} s in the network, "
                f"{seconds - in_net:.2f} s outside it")
        if name == default:
            note = (f"best of {repeats}; the same {tiles} windows, the network run by "
                    f"{fast.backend} from an ONNX export (not counted by the torch hook)")
        if name.startswith("MONAI"):
            note += f"; loading + padding the image first: {load_s:.1f} s (not counted)"
        report.rows.append(Row(
            "a", f"{size} x {size} RGB, whole image: {name}",
            f"{size * size / 1e6 / seconds:.2f} Mpx/s, {tiles / seconds:.1f} tiles/s "
            f"({seconds:.1f} s)", "", note,
        ))
    monai = best["MONAI, tensor in memory"].seconds
    ratio_lazy = monai / best["engine, lazy slide"].seconds
    ratio_memory = monai / best["engine, numpy in memory"].seconds
    ratio_default = monai / best[default].seconds
    estimate = _equal_network_ratios(best)
    report.rows += [
        Row("a", "speed engine / MONAI (engine reads the lazy slide)", f"{ratio_lazy:.2f}x",
            ">= 1.2x", "same torch network in both; MONAI's image already in memory"),
        Row("a", "speed engine / MONAI (both in memory)", f"{ratio_memory:.2f}x", ">= 1.2x",
            "same torch network in both"),
        Row("a", "same, with the network's time taken as equal (estimate)",
            f"{estimate[0]:.2f}x lazy, {estimate[1]:.2f}x in memory", "",
            "fastest network time + each method's time outside the network; removes the "
            "run-to-run noise of the network itself"),
        Row("a", f"speed engine with its CPU default ({fast.backend}) / MONAI with torch",
            f"{ratio_default:.2f}x", ">= 1.2x",
            "engine reads the lazy slide; MONAI as its users run it (torch float32, image in "
            "memory)"),
        _agreement_row(outputs, default),
    ]
    report.facts.update(tiles=tiles, ratios=(ratio_lazy, ratio_memory, *estimate),
                        ratio_default=(fast.backend, ratio_default),
                        load_s=load_s, best={k: v for k, v in best.items() if k != default})
    return report


def _equal_network_ratios(best: dict[str, Timing]) -> tuple[float, float]:
    """MONAI / engine time (lazy, in memory) if the network had taken its fastest time in
    every run: the engines differ only in what they do outside the network."""
    names = ("engine, lazy slide", "engine, numpy in memory", "MONAI, tensor in memory")
    network = min(best[n].network_s for n in names)
    lazy, memory, monai = (network + best[n].seconds - best[n].network_s for n in names)
    return monai / lazy, monai / memory


class FirstChannels(nn.Module):
    """A network that costs almost nothing (the first two input channels): timing it leaves
    the cost of the code around the network, which is what remains when a GPU is fast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2] * 1.0


def bench_overhead(runner: ModelRunner, size: int, repeats: int) -> Report:
    """(a) The same comparison with a free network: the engine's and MONAI's own costs."""
    free = ModelRunner(FirstChannels(), runner.spec, device=runner.device, amp=runner.amp,
                       batch_size=BATCH, backend="torch")
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    tensor, crop = monai_input(array)
    _warm_up(array, tensor, free)
    calls = {"engine": lambda: _engine_run(array, free),
             "MONAI": lambda: _monai_run(tensor, free, crop)}
    with EvalCounter(free.model, free.device) as counter:
        best, _ = _best_of(calls, 3 * repeats, counter)
    tiles = best["engine"].images
    per_tile = {name: 1e3 * b.seconds / tiles for name, b in best.items()}
    row = Row("a", f"cost outside the network, {size} x {size} in memory (network replaced by "
              "a channel slice)", f"engine {per_tile['engine']:.2f} ms/tile, MONAI "
              f"{per_tile['MONAI']:.2f} ms/tile", "", f"best of {3 * repeats}; engine includes "
              "the label map (argmax) and the ModelRunner's checks and NumPy round trip")
    return Report([row], {"overhead_ms": per_tile})


def _agreement_row(outputs: dict[str, Any], default: str) -> Row:
    engine, monai = outputs["engine, lazy slide"], outputs["MONAI, tensor in memory"]
    diff = float(np.abs(engine - monai).max())
    same_labels = float((engine.argmax(0) == monai.argmax(0)).mean())
    lazy_vs_memory = float(np.abs(engine - outputs["engine, numpy in memory"]).max())
    fast = outputs[default]
    fast_diff = float(np.abs(fast - monai).max())
    fast_labels = float((fast.argmax(0) == monai.argmax(0)).mean())
    return Row(
        "a", "outputs: engine vs MONAI", f"max abs diff {diff:.1e}; labels equal on "
        f"{100 * same_labels:.3f} % of pixels", "agree (< 1e-4)",
        f"all {engine.shape[0]} x {engine.shape[1]} x {engine.shape[2]} probabilities; engine "
        f"lazy vs in memory: {lazy_vs_memory:.1e}; {default} vs MONAI: {fast_diff:.1e}, "
        f"labels equal on {100 * fast_labels:.3f} %",
    )


def bench_tissue_skipping(runner: ModelRunner, repeats: int) -> Report:
    """(a) Real SVS slides: the same prediction with and without skipping tiles off tissue."""
    report = Report()
    slides = sorted(WSI.glob("*.svs")) if WSI.is_dir() else []
    if not slides:
        report.rows.append(Row("a", "tissue skipping on real slides", "not measured", "",
                               f"no SVS slides in {WSI}"))
    for path in slides:
        row, fact = _skip_one(path, runner, repeats)
        report.rows.append(row)
        report.facts.setdefault("skip", []).append(fact)
    return report


def window_filter(keep: Callable[[tuple[int, int, int, int]], bool]) -> Callable[[Any], bool]:
    """An engine ``tile_filter`` from a box filter: asks about the pixels a tile writes."""
    return lambda tile: keep((tile.window.y0, tile.window.y1, tile.window.x0, tile.window.x1))


def _skip_one(path: Path, runner: ModelRunner, repeats: int) -> tuple[Row, tuple]:
    from napari_neuroseg.preprocess.tissue import slide_tissue_mask, tile_filter_from_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "MPP unknown": irrelevant here
        levels = read_slide(path).levels
    index = next(i for i, lv in enumerate(levels) if max(lv.shape[:2]) <= SVS_MAX_SIDE)
    level = levels[index]
    start = time.perf_counter()
    mask, downsample = slide_tissue_mask(levels[index:], max_size=1024)
    keep = window_filter(tile_filter_from_mask(mask, downsample))
    mask_s = time.perf_counter() - start
    calls = {"all": lambda: _engine_run(level, runner).counts,
             "tissue": lambda: _engine_run(level, runner, tile_filter=keep).counts}
    with EvalCounter(runner.model, runner.device) as counter:
        best, counts = _best_of(calls, repeats, counter)
    full_s, skip_s = best["all"].seconds, best["tissue"].seconds + mask_s
    n, skipped = counts["all"].computed, counts["tissue"].skipped
    row = Row(
        "a", f"tissue skipping: {path.name} level {index} ({level.shape[0]} x "
        f"{level.shape[1]})", f"{n - skipped} / {n} tiles computed; {full_s:.1f} s -> "
        f"{skip_s:.1f} s ({full_s / skip_s:.2f}x faster)", "",
        f"best of {repeats}; HSV tissue mask ({mask_s:.2f} s) counted; tiles with < 5 % tissue "
        f"in their window skipped; network calls {best['all'].calls} -> {best['tissue'].calls}",
    )
    return row, (path.name, n, skipped, full_s / skip_s, best["all"].calls, best["tissue"].calls)


# --- (b) memory -----------------------------------------------------------------------------


def grey_predictor(batch: np.ndarray) -> np.ndarray:
    """Cheap stand-in for a network: ``[1 - grey, grey]`` per pixel, grey in [0, 1]."""
    grey = batch.mean(axis=1, keepdims=True) / 255.0
    return np.concatenate([1.0 - grey, grey], axis=1)


class RssSampler:
    """Peak resident memory of this process, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def rss_child(slide: Path, region_size: int, workdir: Path) -> dict[str, Any]:
    """Run in a fresh process: predict a centred region with the zarr aggregator."""
    import psutil

    level = read_slide(slide).levels[0]
    h, w = level.shape[:2]
    y0, x0 = (h - region_size) // 2, (w - region_size) // 2
    region = Region(y0, x0, y0 + region_size, x0 + region_size)
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with RssSampler() as sampler:
        result = predict_region(
            level, grey_predictor, EngineOptions(patch_size=512, halo=32, batch_size=BATCH),
            region=region,
            aggregator=functools.partial(ZarrAggregator, workdir / "prediction.zarr"),
        )
        foreground = float(result.labels.mean().compute())  # read back chunk by chunk
    return {"baseline": baseline, "peak": sampler.peak, "seconds": time.perf_counter() - start,
            "tiles": result.counts.computed, "foreground": foreground,
            "hwm": _high_water_mark()}


def _high_water_mark() -> int | None:
    """Peak RSS of this process since it started (Linux ``VmHWM``; None elsewhere).

    Not ``getrusage``'s ``ru_maxrss``, which Linux carries over from the parent across exec.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) * 1024


def bench_memory(folder: Path, region_size: int) -> Report:
    """(b) Peak RSS for the same region size of a small and a huge slide (own processes)."""
    report, peaks = Report(), {}
    for side in RSS_SLIDES:
        start = time.perf_counter()
        slide = write_synthetic_slide(folder / f"rss-{side}.tif", size=(side, side), fast=True)
        write_s = time.perf_counter() - start
        workdir = Path(tempfile.mkdtemp(dir=folder))
        done = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(slide), "--rss-region",
             str(region_size), "--rss-workdir", str(workdir)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory benchmark on {slide.name} failed:\n{done.stderr}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        slide.unlink()
        peaks[side] = got["peak"]
        growth = (got["peak"] - got["baseline"]) / MB
        hwm = "n/a" if got["hwm"] is None else f"{got['hwm'] / MB:.0f} MB"
        report.rows.append(Row(
            "b", f"peak RSS, {region_size} x {region_size} region of a {side // 1000}k x "
            f"{side // 1000}k lazy slide", f"{got['peak'] / MB:.0f} MB (+{growth:.0f} MB over "
            f"{got['baseline'] / MB:.0f} MB after imports)",
            "< 2 GB", f"{got['tiles']} tiles of 512 px, halo 32, zarr aggregator, labels read "
            f"back; {got['seconds']:.1f} s; process peak incl. imports (VmHWM) {hwm}; slide "
            f"written in {write_s:.1f} s",
        ))
    small, large = (peaks[s] for s in RSS_SLIDES)
    report.rows.append(Row("b", "peak RSS 50k / 10k slide", f"{large / small:.2f}x "
                           f"({(large - small) / MB:+.0f} MB)", "~1.0x (size-independent)"))
    report.facts.update(peak_mb=max(peaks.values()) / MB, rss_ratio=large / small)
    return report


# --- (c) stain normalisation ----------------------------------------------------------------


def bench_normalisation(device: str) -> Report:
    """(c) ``bench_stain.bench_macenko`` rows, when that benchmark exists."""
    report = Report()
    try:
        from bench_stain import bench_macenko
    except ImportError as err:
        report.rows.append(Row("c", "Macenko: staintools vs vectorised", "not measured", "",
                               f"benchmarks/bench_stain.py unavailable ({err})"))
        return report
    devices = ["cpu", "cuda"] if device.startswith("cuda") else ["cpu"]
    for row in bench_macenko(sizes=(256, 512), batch_size=16, repeats=3, devices=devices):
        is_goal = row["method"] == "numpy transform, 1 tile"
        report.rows.append(Row(
            "c", f"Macenko {row['size']} px: {row['method']}",
            f"{row['ms_per_tile']:.2f} ms/tile ({row['speedup']:.1f}x staintools)",
            "faster than staintools" if is_goal else "",
            f"{row['tiles']} tile(s) per call, best of 3",
        ))
        if is_goal:
            report.facts.setdefault("stain", []).append((row["size"], row["speedup"]))
    return report


# --- report ----------------------------------------------------------------------------------


def machine_info(runner: ModelRunner) -> dict[str, str]:
    """Machine, load, device and library versions, for the record."""
    gpu = (torch.cuda.get_device_name() if torch.cuda.is_available()
           else "no GPU in this environment (torch.cuda.is_available() is False)")
    info = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}",
        "python": platform.python_version(),
        "device used": f"{runner.device} (torch {torch.get_num_threads()} threads, "
        f"amp {runner.amp})",
        "GPU": gpu,
    }
    for package in ("torch", "monai", "numpy", "dask", "zarr", "psutil", "staintools"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    return info


def findings(facts: dict[str, Any], runner: ModelRunner) -> list[str]:
    """The explanation under the table, with this run's figures."""
    params = sum(p.numel() for p in runner.model.parameters())
    outside = {name: b.seconds - b.network_s for name, b in facts["best"].items()}
    lazy, memory, monai = outside.values()
    network = [b.network_s for b in facts["best"].values()]
    ratios = facts["ratios"]
    lines = [
        f"- Model: `bench-unet-small`, the registry's `unet` architecture (depth 4, 8 base "
        f"features, {params:,} parameters, random weights) run by `ModelRunner`, small so that "
        "a CPU run takes minutes. Patch 256, halo 0, overlap 64 (MONAI: 0.25), batch 8, "
        "Gaussian blending. MONAI gets the engine's weights as `roi_weight_map` and the image "
        "reflect-padded so that its windows are the engine's patches: both evaluate the "
        f"network on the same {facts['tiles']} windows (counted with a forward hook) and give "
        "the same probabilities.",
        f"- (a) Goal engine >= 1.2x MONAI with the same torch network "
        f"{_verdict(min(ratios[:2]) >= 1.2)}: {ratios[0]:.2f}x reading the lazy slide, "
        f"{ratios[1]:.2f}x with both in memory ({ratios[2]:.2f}x and {ratios[3]:.2f}x with "
        "the network's time taken as equal). With the same network the ratio cannot pass "
        "the share of time the two spend outside it: the network does the same work in "
        f"both and took {min(network):.1f} to {max(network):.1f} s here, against "
        f"{lazy:.2f} s (engine, lazy), {memory:.2f} s (engine, in memory) and {monai:.2f} s "
        "(MONAI) outside it, so equal-network parity is the ceiling on this CPU. The engine "
        "now reads and preprocesses the next batch on a reader thread while the network "
        "runs, fills the batch in place, skips the NaN check on integer pixels, and makes "
        "the label map (which MONAI does not make) with per-class passes instead of "
        "numpy's strided argmax. What users get faster is the network itself: with its CPU "
        f"default backend ({facts['ratio_default'][0]}, an ONNX export of the same weights) "
        f"the engine runs the lazy slide {facts['ratio_default'][1]:.2f}x as fast as MONAI "
        "with torch, outputs within the tolerance (row 'outputs'). On a GPU, where a small "
        "network costs about as much as the overhead, the 'cost outside the network' row is "
        f"the one that matters (engine {facts['overhead_ms']['engine']:.2f} vs MONAI "
        f"{facts['overhead_ms']['MONAI']:.2f} ms/tile; goal <= 0.5 ms). Blending and the "
        "argmax stay in NumPy on the CPU: moving them to the device matters only with a "
        "GPU, which was not available to measure. MONAI needs the whole image as one "
        f"float32 tensor ({facts['load_s']:.1f} s to load and pad here, not counted; 30 GB "
        "for a 50k x 50k slide).",
    ]
    for name, n, skipped, gain, all_calls, calls in facts.get("skip", []):
        full = calls == -(-(n - skipped) // BATCH)
        batching = ("full batches" if full else
                    "skipped tiles leave batches part-empty (filtering before batching would "
                    "keep them full)")
        lines.append(
            f"- (a) Tissue skipping on {name}: {skipped} of {n} tiles skipped, {gain:.2f}x "
            f"faster, tissue mask included; {calls} network calls instead of {all_calls}: "
            f"{batching}.")
    if "peak_mb" in facts:
        lines.append(
            f"- (b) Memory goal {_verdict(facts['peak_mb'] < 2048)}: peak "
            f"{facts['peak_mb']:.0f} MB, {facts['rss_ratio']:.2f}x between the 50k and the 10k "
            "slide. Only the chunks under the tiles are read, and the zarr aggregator holds at "
            "most its 256 MiB write-back buffer. The predictor is a per-pixel NumPy function, "
            "not a network, so that a 64 Mpx region takes seconds; a network adds its weights "
            "and activations, which do not depend on the slide either.")
    if facts.get("stain"):
        speedups = ", ".join(f"{s:.0f}x on {size} px tiles" for size, s in facts["stain"])
        lines.append(
            f"- (c) The engine's Macenko step (stains fitted once per slide, applied per tile) "
            f"is faster than staintools: {speedups}; staintools re-estimates the stains of "
            "every tile and solves a lasso for the concentrations ('numpy fit+transform' does "
            "the same work as staintools).")
    lines.append(
        "- GPU: not measured, no GPU in this environment; `--device cuda` runs the same "
        "benchmark there (AMP and channels-last as `ModelRunner` uses them, torch Macenko rows "
        "on CUDA).")
    lines.append("- The machine is shared with other jobs (load average below): expect +-10 % "
                 "noise on the timings; rounds are interleaved and the best is kept.")
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def render(report: Report, info: dict[str, str], runner: ModelRunner) -> str:
    """The ``## Engine`` markdown section."""
    lines = [
        SECTION, "",
        f"Measured with `python benchmarks/bench_engine.py` on {time.strftime('%Y-%m-%d')}.",
        "", "| id | measurement | result | goal | notes |", "|---|---|---|---|---|",
    ]
    lines += [f"| {r.id} | {r.what} | {r.result} | {r.goal} | {r.notes} |" for r in report.rows]
    lines += ["", *findings(report.facts, runner), "", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table and (unless ``--no-write``) update the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--size", type=int, default=2048, help="image side for (a)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds for (a)")
    parser.add_argument("--rss-region", type=int, default=8192, help="region side for (b)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rss-workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child, args.rss_region, args.rss_workdir)))
        return 0
    registry = ModelRegistry()
    registry.register(bench_spec())
    runner = ModelRunner.from_spec("bench-unet-small", registry, device=args.device,
                                   batch_size=BATCH, backend="torch")
    info = machine_info(runner)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="neuroseg-bench-") as tmp:
        parts = [
            lambda: bench_throughput(Path(tmp), runner, args.size, args.repeats),
            lambda: bench_overhead(runner, args.size, args.repeats),
            lambda: bench_tissue_skipping(runner, args.repeats),
            lambda: bench_memory(Path(tmp), args.rss_region),
            lambda: bench_normalisation(str(runner.device)),
        ]
        for run_part in parts:
            part = run_part()
            report.rows += part.rows
            report.facts.update(part.facts)
    info["load average (1 min) at the end"] = f"{os.getloadavg()[0]:.2f}"
    section = render(report, info, runner)
    print(section)
    if not args.no_write:
        write_section(DOC, SECTION, section)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
