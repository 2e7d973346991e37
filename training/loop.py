"""A task-agnostic training loop: epochs, validation, checkpoints, resume, NaN guard, DDP.

Task recipes plug in through the constructor: a loss, an optimiser factory, epoch-start
callbacks (unfreezing, curricula), an evaluation function and an optional ``forward``.
See docs/training-loop.md for the resume and determinism rules (:mod:`training.seeding`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.device import amp_dtype, resolve_device
from napari_neuroseg.models.spec import ModelSpec
from training.ddp import DistInfo, reduce_sum, wrap_model
from training.progress import ProgressBar
from training.runfolder import (
    RunFolder,
    atomic_write_json,
    load_training_state,
    save_training_state,
)
from training.seeding import seed_everything

__all__ = ["NonFiniteLossError", "Trainer"]

Batch = Any
Callback = Callable[["Trainer", int], None]


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The plain numeric entries of a validation result (lists, None and flags left out)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped, the last good checkpoint is kept."""


def _to_device(obj: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.ndim == 4 and obj.is_floating_point():
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device, channels_last) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device, channels_last) for k, v in obj.items()}
    return obj


def _batch_size(batch: Batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 1


class Trainer:
    """Train ``model`` for ``epochs`` epochs, validating, checkpointing and resuming.

    Parameters
    ----------
    model : torch.nn.Module
        The network (moved to the device; wrapped in DDP when ``dist`` says so).
    spec : ModelSpec
        Stored in the checkpoints' sidecars.
    train_loader, val_loader : iterable
        Batches ``(inputs, targets)`` unless ``forward`` handles them; ``val_loader`` may be
        None (then only the training loss is monitored).
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar tensor``.
    optimizer_factory : callable
        ``optimizer_factory(model) -> torch.optim.Optimizer`` (called again by
        :meth:`rebuild_optimizer`, e.g. when a curriculum changes parameter groups).
    epochs : int
        Total number of epochs.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    amp : bool
        Mixed precision on CUDA (bf16, or fp16 with a GradScaler); ignored on the CPU.
    channels_last : bool or None
        Channels-last memory format for 4-D inputs and the model. None: on CUDA only. On a
        CPU with oneDNN it made a narrow U-Net's training step 1.6x faster here
        (benchmarks/bench_channels_last.py measures it), with the same float32 arithmetic.
    grad_clip : float, optional
        Clip the gradient norm to this value.
    callbacks : sequence of callable
        ``callback(trainer, epoch)`` at the start of every epoch. They must depend only on the
        epoch (on ``--resume`` they are replayed for the last finished epoch before the
        optimiser state is restored).
    evaluate_fn : callable, optional
        ``evaluate_fn(model, val_loader, device) -> dict of float`` (extra validation metrics).
    monitor, mode : str
        The value that chooses the best checkpoint (``"val_loss"``, ``"train_loss"`` or a key of
        ``evaluate_fn``'s result) and whether lower (``"min"``) or higher (``"max"``) is better.
    run_dir : path, optional
        The run folder; None trains without writing anything.
    scheduler_factory : callable, optional
        ``scheduler_factory(optimizer) -> scheduler``, stepped once per epoch
        (``ReduceLROnPlateau`` receives the monitored value).
    early_stopping_patience : int, optional
        Stop after this many epochs without improvement of the monitored value.
    seed : int
        Seeds everything; every epoch reseeds with ``seed + epoch`` so resumed runs match.
    on_progress : callable, optional
        ``on_progress(event: dict)`` for every step and epoch; default: a text bar on stderr.
    forward : callable, optional
        ``forward(model, batch, device) -> (loss, n_samples)`` for tasks whose batches are not
        ``(inputs, targets)`` (patient bags, CycleGAN...).
    dist : DistInfo, optional
        Distributed context from :func:`training.ddp.init_distributed`.
    run_config : dict, optional
        The run's effective configuration, written to ``RUN_DIR/config.json`` when training
        starts (after the task has checked its data, so a refused dataset leaves no folder).
    evaluate_init : bool
        Validate the starting weights once before the first epoch (one pass over
        ``val_loader``): a ``baseline`` event, and ``metrics["baseline"]`` in every checkpoint's
        sidecar next to the epoch's own ``metrics["validation"]``, so that a retrained model
        can be compared with the one it started from on the same split
        (:func:`napari_neuroseg.annotate.start_comparison.compare_with_start`).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        train_loader: Iterable[Batch],
        val_loader: Iterable[Batch] | None,
        loss_fn: Callable[..., torch.Tensor],
        optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer],
        *,
        epochs: int,
        device: str = "auto",
        amp: bool = True,
        channels_last: bool | None = None,
        grad_clip: float | None = None,
        callbacks: Sequence[Callback] = (),
        evaluate_fn: Callable[..., dict[str, float]] | None = None,
        monitor: str = "val_loss",
        mode: str = "min",
        run_dir: str | None = None,
        scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None = None,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        forward: Callable[..., tuple[torch.Tensor, int]] | None = None,
        dist: DistInfo | None = None,
        run_config: dict[str, Any] | None = None,
        evaluate_init: bool = False,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self.dist = dist or DistInfo()
        self.device = resolve_device(device)
        self.spec, self.epochs, self.seed = spec, int(epochs), int(seed)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.loss_fn, self.optimizer_factory = loss_fn, optimizer_factory
        self.grad_clip, self.callbacks = grad_clip, list(callbacks)
        self.evaluate_fn, self.monitor, self.mode = evaluate_fn, monitor, mode
        self.scheduler_factory, self.patience = scheduler_factory, early_stopping_patience
        self.forward = forward or self._default_forward
        self.on_progress = on_progress or ProgressBar(enabled=self.dist.is_main)
        self.run = RunFolder(run_dir) if run_dir is not None else None
        self.run_config = run_config
        cuda = self.device.type == "cuda"
        self.amp_dtype = amp_dtype(self.device) if (amp and cuda) else None
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = wrap_model(self.model, self.device, self.dist)
        fp16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.optimizer: torch.optim.Optimizer
        self.scheduler: Any = None
        self.history: dict[str, list[Any]] = {}
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.stale_epochs = 0
        self._epoch_logs: dict[str, Any] = {}
        self.evaluate_init = bool(evaluate_init)
        self.baseline: dict[str, float] | None = None  # the starting weights' validation
        self._validation: dict[str, float] = {}  # the last epoch's validation values

    # --- hooks for recipes -------------------------------------------------------------------
    def rebuild_optimizer(self) -> None:
        """Create a fresh optimiser (and scheduler) from the factories for the current model."""
        self.optimizer = self.optimizer_factory(self.model)
        if self.scheduler_factory is not None:
            self.scheduler = self.scheduler_factory(self.optimizer)

    def log(self, key: str, value: Any) -> None:
        """Add a JSON value to this epoch's history row (e.g. effective class frequencies)."""
        self._epoch_logs[key] = value

    # --- the loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, list[Any]]:
        """Train until ``epochs`` or early stopping; returns the history.

        Parameters
        ----------
        resume : bool
            Continue from ``RUN_DIR/state`` (the last finished epoch) when it exists.

        Raises
        ------
        NonFiniteLossError
            A training or validation loss became NaN or infinite.
        """
        seed_everything(self.seed)
        if self.run is not None and self.dist.is_main:
            self.run.create()
            if self.run_config is not None:
                atomic_write_json(self.run.config, self.run_config)
        self.rebuild_optimizer()
        start = self._resume() if resume else 0
        if start == 0 and self.evaluate_init:
            self._evaluate_start()
        for epoch in range(start, self.epochs):
            if self.patience is not None and self.stale_epochs >= self.patience:
                break
            self._run_epoch(epoch)
        return self.history

    def _evaluate_start(self) -> None:
        """Validate the weights training starts from (the ``baseline`` of every checkpoint)."""
        if self.val_loader is None:
            return
        self._set_epoch(0)
        self.baseline = _numbers(self._validate(-1))
        self._emit({"event": "baseline", "epoch": -1, "epochs": self.epochs,
                    "monitor": self.monitor, "mode": self.mode, **self.baseline})

    def _resume(self) -> int:
        if self.run is None or not self.run.has_state():
            return 0
        state = load_training_state(self.run)
        last = int(state["epoch"])
        for callback in self.callbacks:
            callback(self, last)
        self.model.load_state_dict(state["model"])
        self.rebuild_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = state["history"]
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.stale_epochs = int(state["stale_epochs"])
        self.baseline = state.get("baseline")
        self._emit({"event": "resume", "epoch": last + 1})
        return last + 1

    def _set_epoch(self, epoch: int) -> None:
        seed_everything(self.seed + epoch)
        for loader in (self.train_loader, self.val_loader):
            for obj in (loader, getattr(loader, "sampler", None),
                        getattr(loader, "batch_sampler", None)):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            generator = getattr(loader, "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed(self.seed + epoch)

    def _run_epoch(self, epoch: int) -> None:
        self._epoch_logs = {}
        self._set_epoch(epoch)
        for callback in self.callbacks:
            callback(self, epoch)
        started = time.perf_counter()
        train_loss = self._train_one_epoch(epoch)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss,
                               "lr": [g["lr"] for g in self.optimizer.param_groups]}
        validation = self._validate(epoch)
        self._validation = _numbers(validation)
        row.update(validation)
        row["seconds"] = time.perf_counter() - started
        row.update(self._epoch_logs)
        value = self._monitored(row)
        self._step_scheduler(value)
        improved = self._update_best(value, epoch)
        for key, val in row.items():
            self.history.setdefault(key, []).append(val)
        self._save(epoch, improved)
        self._emit({"event": "epoch_end", "epoch": epoch, "epochs": self.epochs, **row})

    def _default_forward(self, model: nn.Module, batch: Batch, device: torch.device):
        inputs, targets = _to_device(batch, device, self.channels_last)[:2]
        return self.loss_fn(model(inputs), targets), _batch_size(batch)

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_one_epoch(self, epoch: int) -> float:
        self.net.train()
        total = torch.zeros(2, dtype=torch.float64)
        n_steps = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None
        for step, batch in enumerate(self.train_loader):
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, n = self.forward(self.net, batch, self.device)
            self._check_finite(loss, epoch, step, "training")
            self.scaler.scale(loss).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += torch.tensor([float(loss.detach()) * n, n], dtype=torch.float64)
            self._emit({"event": "step", "epoch": epoch, "epochs": self.epochs, "step": step,
                        "steps": n_steps, "loss": float(total[0] / total[1])})
        total = reduce_sum(total, self.dist)
        return float(total[0] / max(float(total[1]), 1.0))

    def _validate(self, epoch: int) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        self.net.eval()
        total, count = 0.0, 0
        with torch.no_grad(), self._autocast():
            for step, batch in enumerate(self.val_loader):
                loss, n = self.forward(self.model, batch, self.device)
                self._check_finite(loss, epoch, step, "validation")
                total, count = total + float(loss) * n, count + n
        metrics = {"val_loss": total / max(count, 1)}
        if self.evaluate_fn is not None:
            with torch.no_grad():
                metrics.update(self.evaluate_fn(self.model, self.val_loader, self.device))
        return metrics

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int, phase: str) -> None:
        value = float(loss.detach())
        if math.isfinite(value):
            return
        kept = (f"the last good checkpoint is {self.run.last}.safetensors (epoch "
                f"{epoch - 1})" if self.run is not None and epoch > 0 else "no checkpoint kept")
        raise NonFiniteLossError(
            f"{phase} loss is {value} at epoch {epoch}, step {step}: the run stopped; {kept}. "
            "Lower the learning rate, enable gradient clipping or check the data."
        )

    def _monitored(self, row: dict[str, Any]) -> float:
        if self.monitor not in row:
            raise KeyError(f"monitored value {self.monitor!r} not among {sorted(row)}")
        return float(row[self.monitor])

    def _step_scheduler(self, value: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        else:
            self.scheduler.step()

    def _update_best(self, value: float, epoch: int) -> bool:
        better = self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value
        )
        if better:
            self.best_value, self.best_epoch, self.stale_epochs = value, epoch, 0
        else:
            self.stale_epochs += 1
        return better

    def _save(self, epoch: int, improved: bool) -> None:
        if self.run is None or not self.dist.is_main:
            return
        summary = {"epoch": epoch, self.monitor: self.history[self.monitor][-1],
                   "monitor": self.monitor, "mode": self.mode,
                   "validation": self._validation, "baseline": self.baseline}
        atomic_write_json(self.run.history, self.history)
        if improved:
            save_checkpoint(self.run.best, self.model, self.spec, history=self.history,
                            metrics=summary)
        save_checkpoint(self.run.last, self.model, self.spec, history=self.history,
                        metrics=summary)
        save_training_state(self.run, {
            "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(), "history": self.history,
            "best_value": self.best_value, "best_epoch": self.best_epoch,
            "stale_epochs": self.stale_epochs, "baseline": self.baseline,
        })

    def _emit(self, event: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.on_progress(event)
