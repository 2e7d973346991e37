"""Training throughput (issue 4); writes the ``## Training`` section of ``docs/benchmarks.md``.

For the ``mri`` (U-Net, 256 x 256 slices) and ``nuclei`` (HoVer-Net) tasks, on synthetic
datasets in the export layout read through the tasks' own torch datasets:

(a) samples/s of :class:`training.loop.Trainer` against a bare PyTorch loop (zero_grad,
    forward, loss, backward, step) over the same loader, model and loss: the reference;
(b) data loading against the training step: the time to produce a batch (loader alone, in the
    main process) and the time of one optimisation step on batches already in memory. A ratio
    under 1 means one loader process keeps up with the network.

On CUDA, every row is measured with and without AMP. Run ``python benchmarks/bench_training.py``
(``--device cuda`` on a GPU machine, ``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _doc import Row, write_section
from torch import nn
from torch.utils.data import DataLoader

from napari_neuroseg.models.device import amp_dtype, resolve_device
from napari_neuroseg.models.registry import ModelRegistry
from training.loop import Trainer, _to_device

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Training"


@dataclass
class Setup:
    """What one task's benchmark trains: model, spec, dataset and loss."""

    task: str
    what: str
    model: nn.Module
    spec: Any
    dataset: Any
    loss_fn: Callable[..., torch.Tensor]
    batch_size: int
    forward: Callable[..., tuple[torch.Tensor, int]] | None = None


def _mri_setup(root: Path, n_items: int) -> Setup:
    from napari_neuroseg.dataset import Dataset, convert_kaggle_lgg
    from napari_neuroseg.samples.mri import write_lgg_patient
    from training.losses import make_loss
    from training.tasks.mri import task as mri

    n_patients = max(2, n_items // 8)
    for n in range(n_patients):
        write_lgg_patient(root / "kaggle", patient_id=f"TCGA_BB_{n:04d}_20000101", n_slices=8,
                          size=256, seed=n)
    data = Dataset.open(convert_kaggle_lgg(root / "kaggle", root / "mri").path)
    config = mri.Config()
    spec = ModelRegistry().get(config.model)
    dataset = mri.SliceData(data, np.arange(len(data.items)), spec, augment=config.augment)
    model = ModelRegistry().build(spec)
    return Setup("mri", f"{spec.name} ({_params(model)}), 256 x 256 x 3 slices, augmented",
                 model, spec, dataset, make_loss(config.loss), config.batch_size)


def _nuclei_setup(root: Path, n_items: int) -> Setup:
    from napari_neuroseg.dataset import Dataset, DatasetWriter
    from training.tasks.nuclei import task as nuclei
    from training.tasks.nuclei.data import NucleiTiles, nuclei_augment
    from training.tasks.nuclei.targets import HoVerNetLoss

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    n_tiles = max(2, n_items // 4)  # 4 crops of 256 per 512 px tile, as on the real tiles
    with DatasetWriter(root / "nuclei", "nuclei", "HE", {0: "background", 1: "nucleus"}) as w:
        for t in range(n_tiles):
            image = np.full((512, 512, 3), (235, 200, 225), np.uint8)
            labels = np.zeros((512, 512), np.int32)
            for k, (cy, cx) in enumerate(rng.uniform(12, 500, (120, 2)), 1):
                blob = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(36, 120)
                blob &= labels == 0
                labels[blob], image[blob] = k, (90, 60, 150)
            w.add(image, mask=labels, patient_id=f"p{t % 3}")
    data = Dataset.open(root / "nuclei")
    config = nuclei.Config()
    spec = ModelRegistry().get("nuclei-hovernet")
    augment = nuclei_augment(config.jitter_p, config.stain_p, config.blur_p)
    dataset = NucleiTiles(data, np.arange(len(data.items)), spec, crop=spec.input.patch_size[0],
                          crops_per_item=4, augment=augment)
    model = ModelRegistry().build(spec)
    loss = HoVerNetLoss(config.np_ce_weight, config.np_dice_weight, config.hv_mse_weight,
                        config.hv_msge_weight)
    return Setup("nuclei", f"{spec.name} ({_params(model)}), 256 x 256 crops of 512 px tiles "
                 "with ~120 nuclei, augmented, NP/HV targets computed in the loader",
                 model, spec, dataset, loss, config.batch_size)


def _params(model: nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters"


def _forward(setup: Setup) -> Callable[..., tuple[torch.Tensor, int]]:
    if setup.forward is not None:
        return setup.forward

    def forward(model, batch, device):
        x, y = _to_device(batch[0], device, False), _to_device(batch[1], device, False)
        return setup.loss_fn(model(x), y), int(x.shape[0])

    return forward


def _autocast(device: torch.device, amp: bool):
    dtype = amp_dtype(device) if amp and device.type == "cuda" else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Limited:
    """The first ``n`` batches of a loader, as a re-iterable with a length."""

    def __init__(self, loader: DataLoader, n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                return
            yield batch

    def __len__(self) -> int:
        return self.n


def _loader(setup: Setup, workers: int) -> DataLoader:
    return DataLoader(setup.dataset, batch_size=setup.batch_size, shuffle=True,
                      num_workers=workers, drop_last=True,
                      generator=torch.Generator().manual_seed(0))


def bare_loop(setup: Setup, batches: int, device: torch.device, amp: bool, workers: int
              ) -> float:
    """Samples/s of the reference loop: zero_grad, forward + loss, backward, step."""
    model = setup.model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = _forward(setup)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype(device)
                                  == torch.float16)
    n = 0
    _sync(device)
    start = time.perf_counter()
    for batch in _Limited(_loader(setup, workers), batches):
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            loss, k = forward(model, batch, device)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n += k
    _sync(device)
    return n / (time.perf_counter() - start)


def trainer_loop(setup: Setup, batches: int, device: torch.device, amp: bool, workers: int
                 ) -> float:
    """Samples/s of :class:`Trainer` for one epoch of ``batches`` batches, no validation."""
    n_samples = batches * setup.batch_size
    trainer = Trainer(setup.model, setup.spec, _Limited(_loader(setup, workers), batches), None,
                      setup.loss_fn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-4),
                      epochs=1, device=str(device), amp=amp, monitor="train_loss",
                      forward=setup.forward, on_progress=lambda event: None)
    _sync(device)
    start = time.perf_counter()
    trainer.fit()
    _sync(device)
    return n_samples / (time.perf_counter() - start)


def load_vs_step(setup: Setup, batches: int, device: torch.device, amp: bool
                 ) -> tuple[float, float]:
    """Seconds per batch: producing it (main-process loader) and one optimisation step."""
    loader = _loader(setup, 0)
    start = time.perf_counter()
    held = list(_Limited(loader, batches))
    load = (time.perf_counter() - start) / batches
    model = setup.model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = _forward(setup)
    times = []
    for batch in held:
        _sync(device)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            loss, _ = forward(model, batch, device)
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return load, float(np.median(times[1:] if len(times) > 1 else times))


def measure(setup: Setup, device: torch.device, amp: bool, batches: int, workers: int,
            rounds: int) -> list[Row]:
    """The rows of one task on one device / AMP setting."""
    tag = f"{setup.task}, {device.type}{' AMP' if amp else ''}"
    state = {k: v.clone() for k, v in setup.model.state_dict().items()}
    load_vs_step(setup, 1, device, amp)  # warm-up: first-call costs out of the timings
    bare, ours = [], []
    for _ in range(rounds):  # interleaved, best kept: the machine is shared
        setup.model.load_state_dict(state)
        bare.append(bare_loop(setup, batches, device, amp, workers))
        setup.model.load_state_dict(state)
        ours.append(trainer_loop(setup, batches, device, amp, workers))
    setup.model.load_state_dict(state)
    load, step = load_vs_step(setup, batches, device, amp)
    note = (f"batch {setup.batch_size}, {batches} batches, {workers} loader workers, "
            f"best of {rounds}")
    return [
        Row("a", f"{tag}: Trainer", f"{max(ours):.2f} samples/s", "", note),
        Row("a", f"{tag}: bare PyTorch loop", f"{max(bare):.2f} samples/s", "", note),
        Row("a", f"{tag}: Trainer / bare loop", f"{max(ours) / max(bare):.2f}x", ">= 0.95x", ""),
        Row("b", f"{tag}: loading vs step", f"{load * 1e3:.0f} ms vs {step * 1e3:.0f} ms per "
            f"batch: ratio {load / step:.2f}", "< 1", "loader in the main process; step median "
            "on batches in memory"),
    ]


def _machine(device: torch.device, amp: bool) -> list[str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = (torch.cuda.get_device_name(device) if device.type == "cuda" else
           "no GPU in this environment (torch.cuda.is_available() is "
           f"{torch.cuda.is_available()})")
    return [
        f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        f"- load average (1 min): {load:.2f}",
        f"- python: {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)",
        f"- device: {device}; GPU: {gpu}",
    ]


def render(rows: list[Row], notes: list[str], machine: list[str], command: str) -> str:
    """The markdown section."""
    lines = [SECTION, "", f"Measured with `{command}` on {time.strftime('%Y-%m-%d')}.", "",
             "| id | measurement | result | goal | notes |", "|---|---|---|---|---|"]
    lines += [f"| {r.id} | {r.what} | {r.result} | {r.goal} | {r.notes} |" for r in rows]
    lines += ["", *[f"- {n}" for n in notes], "", "Machine:", "", *machine, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and (unless ``--no-write``) update docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--tasks", default="mri,nuclei")
    parser.add_argument("--batches", type=int, default=6, help="batches per timed loop")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="loader workers in (a)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    setups = {"mri": _mri_setup, "nuclei": _nuclei_setup}
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            setup = setups[task](Path(tmp) / task, args.batches * 8 + 8)
            notes.append(f"{task}: {setup.what}; {len(setup.dataset)} items.")
            for amp in ((False, True) if device.type == "cuda" else (False,)):
                rows += measure(setup, device, amp, args.batches, args.workers, args.rounds)
                print("\n".join(f"{r.what}: {r.result}" for r in rows[-4:]), flush=True)
    notes.append("(a) Per step the Trainer adds one loss read-back, a NaN check and a progress "
                 "event to the bare loop; on CPU a step takes seconds, so the ratio measures "
                 "the machine's load between rounds as much as the Trainer (rounds are "
                 "interleaved and the best kept; the load average is below).")
    notes.append("(b) The loader's time per batch is a few per cent of the step's: one loader "
                 "process (`num_workers: 1`) keeps any of these networks fed on CPU; on a GPU "
                 "the step shrinks, so raise `num_workers` there.")
    if device.type != "cuda":
        notes.append("GPU: not measured, no GPU in this environment; `--device cuda` runs the "
                     "same rows with and without AMP.")
    command = "python benchmarks/bench_training.py " + " ".join(argv or sys.argv[1:])
    section = render(rows, notes, _machine(device, False), command.strip())
    print(section)
    if not args.no_write:
        write_section(DOC, SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
