"""CPU inference backends of the shipped models against torch float32 (issue 16, item 2).

For every model with shipped weights, one :class:`ModelRunner` per backend
(:data:`napari_neuroseg.models.backends.BACKENDS`) predicts the same batch of patches at the
model's patch size; the runs are interleaved and each backend's best round is kept. The
reference is the ``torch`` backend in the same run. Outputs are the runner's (probabilities,
HoVer-Net maps), compared with torch's: largest absolute difference, and the share of pixels
(or tiles) whose label (argmax) is the same. First-call time is the export, compilation and
first batch with an empty export cache. A backend becomes the CPU default only if, on every
model, it is >= 1.5x faster than torch float32, its outputs are within 1e-3 and its labels
agree on >= 99.9 % of pixels.

``python benchmarks/bench_backends.py --write`` puts the table in docs/benchmarks.md
("CPU inference backends").
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from napari_neuroseg.models import ModelRegistry
from napari_neuroseg.models.backends import BACKENDS, CPU_DEFAULT, BackendError
from napari_neuroseg.models.runner import ModelRunner

try:
    from benchmarks._doc import DOC, Row, write_section
except ImportError:  # run as a script from benchmarks/
    from _doc import DOC, Row, write_section

HEADING = "## CPU inference backends"
MODELS = ("nuclei-hovernet", "gbm-tissue-8", "mri-flair-unet", "mri-flair-transunet",
          "nuclei-lenet")
SPEEDUP, TOLERANCE, AGREEMENT = 1.5, 1e-3, 0.999


def _labels(out: np.ndarray, runner: ModelRunner) -> list[np.ndarray]:
    """The label maps a user sees: argmax over classes (HoVer-Net: nucleus and type)."""
    if runner.spec.task == "instance_segmentation":
        maps = [out[:, :2].argmax(1)]
        if out.shape[1] > 4:
            maps.append(out[:, 4:].argmax(1))
        return maps
    if runner.spec.task == "slice_classification":
        return [out[:, 0] >= 0.5]
    return [out.argmax(1)]


def _batch(runner: ModelRunner, n: int, seed: int) -> np.ndarray:
    spec = runner.spec
    h, w = spec.input.patch_size
    rng = np.random.default_rng(seed)
    scale = float(spec.input.normalization.get("scale", 255.0))
    smooth = rng.uniform(0, scale, (n, len(spec.input.channels), h // 8 + 1, w // 8 + 1))
    return np.repeat(np.repeat(smooth, 8, 2), 8, 3)[:, :, :h, :w].astype(np.float32)


def measure(name: str, backends: tuple[str, ...], repeats: int, cache: Path) -> dict:
    """Per backend: best seconds per batch, first-call seconds, max diff, label agreement."""
    registry = ModelRegistry()
    checkpoint = registry.checkpoint(name)
    runners, first, errors = {}, {}, {}
    for backend in backends:
        try:
            runner = ModelRunner.from_checkpoint(checkpoint, device="cpu", backend=backend)
        except BackendError as err:
            errors[backend] = str(err)
            continue
        runners[backend] = runner
    n = 64 if runners["torch"].spec.input.patch_size[0] <= 64 else 8
    x = _batch(runners["torch"], n, 0)
    outputs = {}
    for backend, runner in list(runners.items()):
        # each backend exports into its own empty cache, so its first call counts its export
        os.environ["NAPARI_NEUROSEG_CACHE"] = str(cache / name / backend)
        start = time.perf_counter()
        try:
            outputs[backend] = runner(x)
        except Exception as err:  # an export or compilation that fails is a result too
            errors[backend] = f"{type(err).__name__}: {str(err)[:160]}"
            del runners[backend]
            continue
        first[backend] = time.perf_counter() - start
    best = {b: math.inf for b in runners}
    order = list(runners)
    for r in range(repeats):
        for backend in order[r % len(order):] + order[: r % len(order)]:
            start = time.perf_counter()
            runners[backend](x)
            best[backend] = min(best[backend], time.perf_counter() - start)
    ref = outputs["torch"]
    ref_labels = _labels(ref, runners["torch"])
    rows = {}
    for backend in runners:
        out = outputs[backend]
        agree = min(float((a == b).mean()) for a, b in
                    zip(_labels(out, runners[backend]), ref_labels, strict=True))
        rows[backend] = dict(seconds=best[backend], first=first[backend],
                             diff=float(np.abs(out - ref).max()), agree=agree,
                             speedup=best["torch"] / best[backend],
                             effective=runners[backend].backend)
    return dict(model=name, batch=x.shape, rows=rows, errors=errors,
                params=sum(p.numel() for p in runners["torch"].model.parameters()))


def meets_rule(row: dict | None, backend: str) -> bool:
    """The adoption rule on one model: fast enough and close enough to torch float32."""
    return (row is not None and row["effective"] == backend and row["speedup"] >= SPEEDUP
            and row["diff"] <= TOLERANCE and row["agree"] >= AGREEMENT)


def choose(results: list[dict], backends: tuple[str, ...]) -> tuple[str, list[str], dict]:
    """(CPU default, models kept on torch, geometric-mean speed-ups of the candidates).

    Models on which no backend meets the rule stay on torch; the default is the backend
    with the best geometric-mean speed-up among those that meet it on all the others.
    """
    others = [b for b in backends if b != "torch"]
    kept = [r["model"] for r in results
            if not any(meets_rule(r["rows"].get(b), b) for b in others)]
    rest = [r for r in results if r["model"] not in kept]
    ok = [b for b in others if rest and all(meets_rule(r["rows"].get(b), b) for r in rest)]
    gmean = {b: math.exp(np.mean([math.log(r["rows"][b]["speedup"]) for r in rest]))
             for b in ok}
    return (max(gmean, key=gmean.get) if gmean else "torch"), kept, gmean


def table(results: list[dict], backends: tuple[str, ...]) -> tuple[list[Row], str]:
    rows = []
    for res in results:
        n, c, h, w = res["batch"]
        for backend in backends:
            if backend in res["errors"]:
                rows.append(Row("a", f"{res['model']}: {backend}", "failed", "",
                                res["errors"][backend]))
                continue
            row = res["rows"][backend]
            fell = "" if row["effective"] == backend else f"; fell back to {row['effective']}"
            rows.append(Row(
                "a", f"{res['model']}: {backend}",
                f"{row['seconds'] * 1000:.0f} ms/batch ({row['speedup']:.2f}x torch)",
                f">= {SPEEDUP}x" if backend != "torch" else "reference",
                f"batch {n} x {c} x {h} x {w}; first call {row['first']:.1f} s; max diff "
                f"{row['diff']:.1e}; labels equal on {100 * row['agree']:.3f} %"
                f"{'' if meets_rule(row, backend) or backend == 'torch' else '; misses the rule'}"
                f"{fell}"))
    choice, kept, gmean = choose(results, backends)
    rows.append(Row(
        "b", "CPU default chosen", choice, "fastest that meets the rule",
        "geometric-mean speed-up over the other models: " + (", ".join(
            f"{b} {g:.2f}x" for b, g in sorted(gmean.items(), key=lambda i: -i[1])) or "none")
        + (f"; kept on torch (no backend met the rule): {', '.join(kept)}" if kept else "")))
    return rows, choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS))
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    backends = tuple(["torch"] + [b for b in args.backends if b != "torch"])
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache:
        results = []
        for name in args.models:
            res = measure(name, backends, args.repeats, Path(cache))
            results.append(res)
            for backend, row in res["rows"].items():
                print(f"{name:22s} {backend:14s} {row['seconds'] * 1000:8.1f} ms "
                      f"{row['speedup']:5.2f}x first {row['first']:.1f} s diff "
                      f"{row['diff']:.1e} agree {row['agree']:.4f} ({row['effective']})",
                      flush=True)
            for backend, err in res["errors"].items():
                print(f"{name:22s} {backend:14s} FAILED {err}", flush=True)
    rows, choice = table(results, backends)
    print("chosen:", choice, "(CPU_DEFAULT in the code:", CPU_DEFAULT + ")")
    if args.write:
        _write(rows, choice, results, load0)


def _write(rows: list[Row], choice: str, results: list[dict], load0: float) -> None:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    lines = [
        HEADING, "",
        f"Measured with `python benchmarks/bench_backends.py --write` on "
        f"{datetime.date.today()}.", "",
        "| id | measurement | result | goal | notes |", "|---|---|---|---|---|",
        *[f"| {r.id} | {r.what} | {r.result} | {r.goal} | {r.notes} |" for r in rows], "",
        "- Each model's shipped weights, one batch of smooth random patches at its patch size "
        "(64 for the 32 px LeNet), through `ModelRunner` (normalisation and output conversion "
        "included, so the times are what the engine's predictor costs). Backends interleaved, "
        "best of the rounds; the reference is the torch float32 row of the same model.",
        f"- Adoption rule, per model: >= {SPEEDUP}x torch float32, outputs within "
        f"{TOLERANCE:g}, labels equal on >= {100 * AGREEMENT:.1f} % of pixels, and installable "
        "from PyPI. A model on which no backend meets it stays on torch (the LeNet, 64 tiles "
        "of 32 px a call: the runtimes' cost per call outweighs the work; "
        "`CPU_TORCH_ARCHITECTURES`); the default is the fastest (geometric mean) of the "
        f"backends that meet it on all the others. Chosen: **{choice}** (`CPU_DEFAULT` in "
        f"`models/backends.py` is `{CPU_DEFAULT}`). `bf16` misses the tolerance (bfloat16 "
        "keeps 8 bits of mantissa), so it stays opt-in. `ModelRunner(backend=...)`, "
        "`--backend` or `NAPARI_NEUROSEG_BACKEND` choose another.",
        "- First call: ONNX export (cached on disk, keyed by the weights hash) plus the "
        "runtime's compilation, each backend with an empty export cache; later sessions load "
        "the cached export. `compile`'s first call reuses torch's own compile cache in /tmp "
        "when an earlier run left one: with a cold one it took 12-121 s per model here.",
        "- GPU: not measured, no GPU in this environment. On CUDA `auto` keeps torch with "
        "mixed precision and channels-last.",
        "", "Machine:", "",
        f"- {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}); "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{version('onnxruntime')}, openvino {version('openvino')}",
        f"- load average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the "
        "end (other jobs share the 2 cores: read the ratios, not the times)", "",
    ]
    write_section(DOC, HEADING, "\n".join(lines))


if __name__ == "__main__":
    main()
