"""A tiny training run for the subprocess tests (resume after SIGKILL, DDP under torchrun).

Usage: ``python tiny_run.py RUN_DIR EPOCHS [--slow-from E] [--resume] [--ddp]``.
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import time

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from napari_neuroseg.models.spec import InputSpec, ModelSpec
from training.ddp import cleanup, distributed_loader, init_distributed
from training.loop import Trainer


def tiny_spec() -> ModelSpec:
    """A spec for the tiny 2-class tile classifier."""
    return ModelSpec(
        name="tiny", task="tile_classification", architecture="tiny", arch_kwargs={},
        input=InputSpec(channels=("R", "G", "B"), normalization={"kind": "zscore"},
                        patch_size=(8, 8)),
        classes=("a", "b"), colors=("#000000", "#ffffff"), output="probabilities",
        synthetic=True,
    )


def tiny_model() -> nn.Module:
    """A small conv net with dropout (so the RNG matters)."""
    torch.manual_seed(123)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def tiny_data(n: int = 64) -> TensorDataset:
    """Random images; the label says whether the mean is positive."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())


def main() -> None:
    """Parse the arguments and train."""
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("epochs", type=int)
    parser.add_argument("--slow-from", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ddp", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    info = init_distributed("cpu") if args.ddp else None
    loader = DataLoader(tiny_data(), batch_size=8, shuffle=True)
    if info is not None:
        loader = distributed_loader(loader, info, seed=0)
    current = {"epoch": 0}

    def mark(trainer: Trainer, epoch: int) -> None:
        current["epoch"] = epoch

    def forward(model, batch, device):
        if args.slow_from is not None and current["epoch"] >= args.slow_from:
            time.sleep(0.5)
        x, y = batch
        return nn.functional.cross_entropy(model(x), y), len(y)

    trainer = Trainer(
        tiny_model(), tiny_spec(), loader, DataLoader(tiny_data(16), batch_size=8),
        nn.functional.cross_entropy, lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
        epochs=args.epochs, device="cpu", run_dir=args.run_dir, seed=7, callbacks=[mark],
        forward=forward, dist=info, on_progress=lambda event: None,
        scheduler_factory=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.9),
    )
    trainer.fit(resume=args.resume)
    if info is not None:
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        save_file(weights, f"{args.run_dir}/rank{info.rank}_weights.safetensors")
        cleanup()


if __name__ == "__main__":
    main()
