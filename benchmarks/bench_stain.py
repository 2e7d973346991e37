"""Macenko stain normalisation: staintools against the vectorised numpy and torch versions.

:func:`bench_macenko` times, per tile and for each tile size:

- ``staintools``: ``StainNormalizer("macenko").transform`` (it re-estimates the source stains
  of every tile and solves the concentrations with spams' lasso);
- ``numpy fit+transform``: :class:`MacenkoNormalizer` fitted on the tile, then applied (the
  same work as staintools, for a like-for-like ratio);
- ``numpy transform``: applied with stains fitted once per slide (how the engine uses it),
  one tile and a batch;
- ``torch`` on CPU, and on CUDA when available (tensors already on the device), one tile and a
  batch.

Methods are interleaved in every repeat and the best repeat is kept, so that a busy machine
slows all of them alike. Run ``python benchmarks/bench_stain.py`` to print a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_neuroseg.preprocess.stain import MacenkoNormalizer
from napari_neuroseg.samples._slide_texture import he_region

SLIDE = (8192, 8192)


def _tiles(size: int, count: int) -> np.ndarray:
    """``count`` different tissue tiles of the synthetic slide, ``(count, size, size, 3)``."""
    centre = SLIDE[0] // 2
    return np.stack([he_region(centre + (k % 4) * size, centre + (k // 4) * size, size, size,
                               size=SLIDE) for k in range(count)])


def _best_ms(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time (ms) of each call over ``repeats`` rounds, calls interleaved."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def _torch_calls(normalizer: MacenkoNormalizer, batch: np.ndarray, device: str
                 ) -> dict[str, Callable[[], Any]]:
    import torch

    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(device)
    single = tensor[:1].contiguous()

    def timed(images: torch.Tensor) -> Callable[[], Any]:
        def call() -> Any:
            out = normalizer.transform_torch(images)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        return call

    return {f"torch {device}, 1 tile": timed(single),
            f"torch {device}, batch": timed(tensor)}


def _calls(size: int, batch_size: int, devices: Sequence[str]) -> tuple[dict, dict[str, int]]:
    """The timed calls for one tile size, and how many tiles each call processes."""
    import staintools

    batch = _tiles(size, batch_size)
    tile, target = batch[0], batch[-1]
    reference = staintools.StainNormalizer(method="macenko")
    reference.fit(target.copy())
    fitted = MacenkoNormalizer().fit(tile)
    calls = {
        "staintools": lambda: reference.transform(tile.copy()),  # it writes into its input
        "numpy fit+transform": lambda: MacenkoNormalizer().fit(tile).transform(tile),
        "numpy transform, 1 tile": lambda: fitted.transform(tile),
        "numpy transform, batch": lambda: fitted.transform(batch),
    }
    for device in devices:
        calls.update(_torch_calls(fitted, batch, device))
    return calls, {name: batch_size if name.endswith("batch") else 1 for name in calls}


def _default_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def bench_macenko(
    sizes: Sequence[int] = (256, 512),
    batch_size: int = 16,
    repeats: int = 5,
    devices: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Time Macenko normalisation per tile: staintools, numpy and torch.

    Parameters
    ----------
    sizes : sequence of int, optional
        Tile edges in pixels.
    batch_size : int, optional
        Tiles per batch for the batched rows.
    repeats : int, optional
        Rounds; the best round of each method is reported.
    devices : sequence of str, optional
        Torch devices; default ``["cpu"]`` plus ``"cuda"`` when available.

    Returns
    -------
    list of dict
        One row per method and size: ``size``, ``method``, ``tiles`` (per call),
        ``ms_per_tile``, ``vs_staintools`` (time ratio, < 1 is faster) and ``speedup``
        (staintools time / this time).
    """
    devices = list(devices) if devices is not None else _default_devices()
    rows = []
    for size in sizes:
        calls, tiles = _calls(size, batch_size, devices)
        best = _best_ms(calls, repeats)
        baseline = best["staintools"]
        for name, ms in best.items():
            per_tile = ms / tiles[name]
            rows.append({"size": size, "method": name, "tiles": tiles[name],
                         "ms_per_tile": round(per_tile, 3),
                         "vs_staintools": round(per_tile / baseline, 4),
                         "speedup": round(baseline / per_tile, 1)})
    return rows


def machine() -> str:
    """One line about where the numbers were taken."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), {device}, "
            f"load average {load:.1f}")


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`bench_macenko` rows."""
    lines = ["| tile | method | tiles per call | ms per tile | x staintools speed |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['size']} | {row['method']} | {row['tiles']} | "
                     f"{row['ms_per_tile']:.2f} | {row['speedup']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = bench_macenko(args.sizes, args.batch, args.repeats)
    print(render(rows))
    print(f"\n{machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
