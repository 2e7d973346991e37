"""Nuclei throughput on CPU: the HoVer-Net model against the classical baseline, same region.

The region (level-0 pixels of a real slide, ``../shared/data/wsi/cmu-1-small-region.svs`` by
default) is segmented twice in the same run:

* **model**: :func:`napari_neuroseg.analysis.region.segment_nuclei` as the Nuclei widget runs
  it: the engine reads the level nearest the model's working resolution, runs the network over
  its tiles (halo, blending; tissue skipping off so every tile counts) and the marker-controlled
  watershed, with the shipped post-processing;
* **reference**: :func:`napari_neuroseg.analysis.nuclei_classical.classical_nuclei` on the same
  region read into memory at the same resolution (the baseline the model must beat).

Reported: tiles/s and Mpx/s at the working resolution (best of ``--repeats``), the share of
the model's time spent in the watershed, and the model / classical time ratio. ``--write``
puts the table in docs/benchmarks.md ("Nuclei throughput (CPU)").
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions, classical_nuclei
from napari_neuroseg.analysis.region import segment_nuclei
from napari_neuroseg.analysis.slide import plan_slide
from napari_neuroseg.engine import Region
from napari_neuroseg.io import open_image
from napari_neuroseg.models.source import ModelSource

try:
    from benchmarks._doc import DOC, Row, write_section
except ImportError:  # run as a script from benchmarks/
    from _doc import DOC, Row, write_section

HEADING = "## Nuclei throughput (CPU)"
DEFAULT_SLIDE = Path(__file__).resolve().parents[2] / "shared/data/wsi/cmu-1-small-region.svs"


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(slide: Path, model: str, size: int, repeats: int, batch: int) -> dict:
    """Time the model and the classical baseline on a ``size`` square (working pixels)."""
    image = open_image(slide)[0]
    runner = ModelSource(model, device="cpu", batch_size=batch).runner()
    spec = runner.spec
    plan = plan_slide(image, spec, tissue_only=False)
    side = round(size * plan.choice.working_mpp / plan.choice.base_mpp)
    h, w = image.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    region = Region(y0, x0, min(h, y0 + side), min(w, x0 + side))
    model_s, result = _best(lambda: segment_nuclei(plan, runner, region, batch_size=batch),
                            repeats)
    labels = result.data
    tiles = int(result.counts.computed) + int(result.counts.cached)
    wr = result.working_region
    rgb = np.asarray(plan.array[wr.y0:wr.y1, wr.x0:wr.x1])[..., :3]
    options = ClassicalNucleiOptions(mpp=plan.choice.working_mpp)
    classical_s, classical = _best(lambda: classical_nuclei(rgb, options), repeats)
    mpx = labels.size / 1e6
    return {"model": spec.name, "size": labels.shape, "tiles": tiles, "model_s": model_s,
            "classical_s": classical_s, "mpx": mpx, "nuclei": int(labels.max()),
            "nuclei_classical": int(classical.max()), "working_mpp": plan.choice.working_mpp,
            "threads": torch.get_num_threads()}


def rows(result: dict) -> list[Row]:
    """The benchmark's table rows."""
    shape = f"{result['size'][1]} x {result['size'][0]}"
    tiles = result["tiles"]
    per_tile = f", {tiles / result['model_s']:.1f} tiles/s ({tiles} tiles)" if tiles else ""
    return [
        Row("a", f"{result['model']}: network + watershed, {shape} working px at "
            f"{result['working_mpp']:.3g} µm/px",
            f"{result['mpx'] / result['model_s']:.2f} Mpx/s{per_tile}", "",
            f"{result['model_s']:.2f} s, best of the repeats; {result['nuclei']} nuclei; "
            f"{result['threads']} CPU threads"),
        Row("a", "classical baseline (hematoxylin, Otsu, watershed), same pixels (reference)",
            f"{result['mpx'] / result['classical_s']:.2f} Mpx/s", "",
            f"{result['classical_s']:.2f} s; {result['nuclei_classical']} nuclei"),
        Row("a", "time model / classical", f"{result['model_s'] / result['classical_s']:.1f}x",
            "", "what the learnt model costs over the classical method on this CPU"),
    ]


def render(table: list[Row], machine: str) -> str:
    """The docs section."""
    lines = [HEADING, "", f"`python benchmarks/bench_nuclei.py --write` on {machine}.", "",
             "| id | measurement | result | goal | notes |", "|---|---|---|---|---|"]
    lines += [f"| {r.id} | {r.what} | {r.result} | {r.goal} | {r.notes} |" for r in table]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    parser.add_argument("--model", default="nuclei-hovernet",
                        help="registry name (shipped weights) or checkpoint path")
    parser.add_argument("--size", type=int, default=1024, help="region side, working pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    result = bench(args.slide, args.model, args.size, args.repeats, args.batch)
    machine = f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    section = render(rows(result), machine)
    print(section)
    if args.write:
        write_section(DOC, HEADING, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
