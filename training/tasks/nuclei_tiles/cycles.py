"""One training cycle of the ``nuclei-tiles`` recipe: pseudo-label, train, keep the best.

Cycle 0 is the supervised stage; cycle ``K > 0`` first pseudo-labels the pool with the
model it is given (the previous cycle's best). Each cycle is a separate Trainer run in
``OUT/cycle-K`` (resumable on its own); ``cycle.json`` marks a finished cycle, which a
resumed run loads (best checkpoint, history) instead of training again, so a finished
cycle's ``state/`` (weights plus optimiser moments, three times the model: ~400 MB for the
256-px LeNet) is deleted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.device import resolve_device
from napari_neuroseg.models.spec import ModelSpec
from training.ddp import DistInfo
from training.loop import Trainer
from training.runfolder import RunFolder, atomic_write_json
from training.tasks.nuclei_tiles.data import TileSource
from training.tasks.nuclei_tiles.pseudo import (
    BestWeights,
    PseudoLabels,
    effective_threshold,
    pseudo_label,
    report_pseudo_labels,
)

__all__ = [
    "CYCLE_SUMMARY",
    "CycleResult",
    "combined_history",
    "cycle_folder",
    "cycle_notes",
    "finish_run_folder",
    "run_cycle",
    "select_best",
]

#: Written into a cycle's folder when the cycle is finished.
CYCLE_SUMMARY = "cycle.json"
PSEUDO_LABELS = "pseudo_labels.json"

Entry = tuple[TileSource, int, int]
TrainerFactory = Callable[[nn.Module, list[Entry], int, list, Path | None], Trainer]


@dataclass
class CycleResult:
    """What one cycle produced.

    Attributes
    ----------
    cycle : int
    model : torch.nn.Module
        The network, holding ``weights``.
    weights : dict of str to Tensor
        The cycle's best weights (a copy).
    best_value : float
        The monitored validation value of the best epoch.
    history : dict
        The cycle's Trainer history.
    summary : dict
        JSON summary: ``cycle``, ``epochs_run``, ``best_epoch``, ``best_value``,
        ``pseudo_labels`` (accepted per class, None for cycle 0), ``pool_tiles``,
        ``train_tiles`` (labelled + pseudo-labelled), ``val`` (scalar validation metrics of
        the best weights).
    """

    cycle: int
    model: nn.Module
    weights: dict[str, torch.Tensor]
    best_value: float
    history: dict[str, list[Any]]
    summary: dict[str, Any]


def cycle_folder(out: Path | None, cycle: int) -> RunFolder | None:
    """``OUT/cycle-K`` (None without a run folder)."""
    return None if out is None else RunFolder(Path(out) / f"cycle-{cycle}")


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _finished(folder: RunFolder, model: nn.Module) -> CycleResult:
    summary = json.loads((folder.root / CYCLE_SUMMARY).read_text(encoding="utf-8"))
    weights = _copy(load_checkpoint(folder.best, device="cpu").model.state_dict())
    model.load_state_dict(weights)
    history = json.loads(folder.history.read_text(encoding="utf-8"))
    return CycleResult(int(summary["cycle"]), model, weights, float(summary["best_value"]),
                       history, summary)


def _shared(value: Any, dist: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank (the value itself in a single process)."""
    if not dist.distributed:
        return value
    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _pseudo_labels(model: nn.Module, pool: TileSource, spec: ModelSpec, config: Any,
                   dist: DistInfo, folder: RunFolder | None) -> PseudoLabels:
    path = None if folder is None else folder.root / PSEUDO_LABELS
    if config.resume and path is not None and path.is_file():
        return PseudoLabels.load(path, pool)
    device = resolve_device(config.device)
    threshold = effective_threshold(config.confidence_threshold, config.label_smoothing,
                                    len(spec.classes), config.confidence_relative)
    chosen = _shared(pseudo_label(model, pool, spec, device, threshold, config.batch_size),
                     dist)
    if path is not None and dist.is_main:
        folder.root.mkdir(parents=True, exist_ok=True)
        chosen.save(path)
    return chosen


def run_cycle(cycle: int, model: nn.Module, labelled: Sequence[Entry],
              pool: TileSource | None, spec: ModelSpec, config: Any, dist: DistInfo,
              out: Path | None, build_trainer: TrainerFactory,
              val_metrics: Callable[[nn.Module], dict[str, Any]],
              restart: nn.Module | None = None) -> CycleResult:
    """Run (or, on ``--resume``, load or continue) cycle ``cycle``.

    Parameters
    ----------
    cycle : int
        0 for the supervised stage.
    model : torch.nn.Module
        The previous cycle's best model (pseudo-labels the pool; trained further unless
        ``restart`` is given).
    labelled : sequence of (TileSource, int, int)
        The labelled training tiles.
    pool : TileSource or None
        The unlabelled pool (needed when ``cycle > 0``).
    spec : ModelSpec
    config : Config
        The task configuration (``resume``, ``device``, ``confidence_threshold``,
        ``confidence_relative``, ``label_smoothing``, ``batch_size``).
    dist : DistInfo
    out : pathlib.Path or None
        The run folder.
    build_trainer : callable
        ``build_trainer(net, entries, cycle, callbacks, run_dir) -> Trainer`` training
        ``net`` on ``entries``.
    val_metrics : callable
        ``val_metrics(model) -> dict`` of JSON scalars on the validation tiles.
    restart : torch.nn.Module, optional
        A fresh network trained instead of ``model`` (``cycle_init: scratch``).
    """
    folder = cycle_folder(out, cycle)
    if config.resume and folder is not None and (folder.root / CYCLE_SUMMARY).is_file():
        return _finished(folder, model if restart is None else restart)
    pseudo = None
    if cycle > 0:
        if pool is None:
            raise ValueError("a pseudo-labelling cycle needs an unlabelled pool")
        pseudo = _pseudo_labels(model, pool, spec, config, dist, folder)
        report_pseudo_labels(cycle, pseudo, list(spec.classes), emit=dist.is_main)
    net = model if restart is None else restart
    entries = list(labelled) + ([] if pseudo is None else pseudo.entries(pool))
    names = list(spec.classes)
    counts = None if pseudo is None else pseudo.counts(names)

    def log(trainer: Trainer, epoch: int) -> None:
        trainer.log("cycle", cycle)
        trainer.log("pseudo_labels", counts)

    keeper = BestWeights()
    trainer = build_trainer(net, entries, cycle, [keeper, log],
                            None if folder is None else folder.root)
    history = trainer.fit(resume=config.resume)
    weights = _copy(keeper.state(trainer, folder))
    net.load_state_dict(weights)
    summary = {
        "cycle": cycle, "epochs_run": len(history.get("epoch", [])),
        "best_epoch": trainer.best_epoch, "best_value": trainer.best_value,
        "pseudo_labels": counts, "pool_tiles": 0 if pool is None else len(pool),
        "pseudo_threshold": None if pseudo is None else pseudo.threshold,
        "train_tiles": len(entries), "val": val_metrics(net),
    }
    if folder is not None and dist.is_main:
        atomic_write_json(folder.root / CYCLE_SUMMARY, summary)
        shutil.rmtree(folder.state_dir, ignore_errors=True)  # only unfinished cycles resume
    return CycleResult(cycle, net, weights, float(trainer.best_value), history, summary)



def select_best(results: Sequence[CycleResult], mode: str) -> CycleResult:
    """The cycle whose best monitored value is best (the earliest on ties)."""
    best = results[0]
    for result in results[1:]:
        if (result.best_value < best.best_value if mode == "min"
                else result.best_value > best.best_value):
            best = result
    return best


def combined_history(results: Sequence[CycleResult]) -> dict[str, list[Any]]:
    """The cycles' histories one after the other.

    ``epoch`` counts all epochs run; ``cycle_epoch`` is the epoch within its cycle; the
    rows also carry ``cycle`` and ``pseudo_labels`` (logged by :func:`run_cycle`).
    """
    combined: dict[str, list[Any]] = {}
    n = 0
    for result in results:
        history = result.history
        for k in range(len(history.get("epoch", []))):
            row = {key: values[k] for key, values in history.items()}
            row.update(cycle_epoch=row["epoch"], epoch=n, cycle=result.cycle)
            for key, value in row.items():
                combined.setdefault(key, []).append(value)
            n += 1
    return combined


def _copy_checkpoint(source: Path, target: Path) -> None:
    for suffix in (".safetensors", ".json"):  # weights first, the sidecar last (as saved)
        tmp = target.with_name(f".{target.name}{suffix}.tmp")
        shutil.copyfile(source.with_suffix(suffix), tmp)
        tmp.replace(target.with_suffix(suffix))


def finish_run_folder(out: Path, results: Sequence[CycleResult], best: CycleResult,
                      history: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Copy the selected cycle's best checkpoint to ``OUT/checkpoints/best`` and the last
    cycle's last one to ``OUT/checkpoints/last``; write ``OUT/history.json``.

    Returns
    -------
    dict
        The history without the bookkeeping columns and the training accuracy, for the
        history plot (the accuracy has its own plot).
    """
    folder = RunFolder(out).create()
    _copy_checkpoint(RunFolder(out / f"cycle-{best.cycle}").best, folder.best)
    _copy_checkpoint(RunFolder(out / f"cycle-{results[-1].cycle}").last, folder.last)
    atomic_write_json(folder.history, history)
    hidden = {"cycle", "cycle_epoch", "pseudo_labels", "train_accuracy"}  # learning_curves.png
    return {k: v for k, v in history.items() if k not in hidden}


def cycle_notes(results: Sequence[CycleResult], pool: TileSource | None) -> list[str]:
    """Report lines: the pool and a table of the cycles."""
    if pool is None:
        notes = ["No unlabelled pool: supervised stage only (no pseudo-labelling)."]
    else:
        notes = [f"Unlabelled pool: {len(pool)} tiles; {len(results) - 1} pseudo-labelling "
                 "cycle(s)."]
    notes += ["", "| cycle | pseudo-labels accepted | epochs | best value | val F1 | val AUC |",
              "|---|---|---|---|---|---|"]
    for result in results:
        s = result.summary
        accepted = ", ".join(f"{k}: {v}" for k, v in s["pseudo_labels"].items()) \
            if s["pseudo_labels"] is not None else "-"
        notes.append(f"| {result.cycle} | {accepted} | {s['epochs_run']} | "
                     f"{result.best_value:.4f} | {_fmt(s['val'].get('f1'))} | "
                     f"{_fmt(s['val'].get('auc'))} |")
    empty = [r.cycle for r in results if r.summary["pseudo_labels"] is not None
             and not sum(r.summary["pseudo_labels"].values())]
    if empty:
        notes += ["", f"**Warning: cycle(s) {', '.join(map(str, empty))} accepted no "
                  "pseudo-label** (no pool tile above the confidence threshold): they trained "
                  "on the labelled tiles only."]
    return notes


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
