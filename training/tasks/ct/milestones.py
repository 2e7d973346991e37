"""Milestone checkpoints of the ``ct`` task: every N epochs, F1 in the file name.

The CT metastasis recipe (docs/training-recipes.md) keeps checkpoints at milestones besides
the best one, named by epoch, curriculum stage and F1 (``checkpoint_epoch50_stage3_f1_0.8276``)
so that a person can pick another trade-off later (e.g. the epoch with the best specificity).
Here they are ``OUT/checkpoints/milestones/epoch{E:03d}_stage{S}_f1_{F:.4f}`` (E counted from
1, F the validation patient F1 at that epoch's threshold), safetensors with the usual sidecar
(the epoch's threshold in ``spec.threshold``, its metrics in ``metrics``), next to ``best`` and
``last``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_neuroseg.models.checkpoint import save_checkpoint

__all__ = ["MILESTONE_FOLDER", "MilestoneCheckpoints", "milestone_name"]

MILESTONE_FOLDER = "milestones"


def milestone_name(epoch: int, stage: int, f1: float | None) -> str:
    """``epoch{E:03d}_stage{S}_f1_{F:.4f}`` for the 0-based ``epoch`` (``nan`` without F1)."""
    value = "nan" if f1 is None or not math.isfinite(float(f1)) else f"{float(f1):.4f}"
    return f"epoch{epoch + 1:03d}_stage{stage}_f1_{value}"


class MilestoneCheckpoints:
    """Epoch-start Trainer callback saving every ``every``-th epoch (and, through
    :meth:`finish`, the last one run).

    At the start of epoch ``e`` the model holds the weights of epoch ``e - 1``, its history
    row and its threshold (``trainer.spec``); they are written then. A file already present is
    kept, so a resumed run (which replays the callback before restoring its weights) never
    overwrites a milestone with other weights.

    Parameters
    ----------
    folder : pathlib.Path or None
        Where to write (None: nothing is written).
    every : int or None
        Save epochs ``every - 1``, ``2 * every - 1``... (None or 0: only :meth:`finish`).
    stage_starts : sequence of int
        First epoch of each curriculum stage (for the stage in the name).
    monitor_f1 : str
        The history key holding the F1 of the name.
    enabled : bool
        False on DDP ranks other than 0.
    """

    def __init__(self, folder: Path | None, every: int | None, stage_starts: Sequence[int],
                 monitor_f1: str = "patient_f1", enabled: bool = True) -> None:
        self.folder, self.every = folder, int(every or 0)
        self.stage_starts, self.monitor_f1 = tuple(stage_starts), monitor_f1
        self.enabled = enabled and folder is not None
        self.saved: list[Path] = []

    def stage(self, epoch: int) -> int:
        """The curriculum stage (1-based) of ``epoch``."""
        return max(1, sum(1 for start in self.stage_starts if start <= epoch))

    def __call__(self, trainer: Any, epoch: int) -> None:
        """Save epoch ``epoch - 1`` when it is a milestone."""
        previous = epoch - 1
        if self.every and previous >= 0 and (previous + 1) % self.every == 0:
            self.save(trainer, previous)

    def finish(self, trainer: Any) -> None:
        """Save the last epoch run (the recipe keeps the final epoch too)."""
        epochs = trainer.history.get("epoch", [])
        if epochs:
            self.save(trainer, int(epochs[-1]))

    def save(self, trainer: Any, epoch: int) -> Path | None:
        """Write epoch ``epoch``'s checkpoint (the weights the model holds now)."""
        if not self.enabled:
            return None
        history = trainer.history
        epochs = history.get("epoch", [])
        if epoch not in epochs:
            return None
        row = {key: values[epochs.index(epoch)] for key, values in history.items()
               if len(values) == len(epochs)}
        assert self.folder is not None
        path = self.folder / milestone_name(epoch, self.stage(epoch), row.get(self.monitor_f1))
        if path.with_suffix(".safetensors").exists():
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = {"epoch": epoch, "monitor": trainer.monitor, "mode": trainer.mode,
                   "validation": {k: v for k, v in row.items()
                                  if isinstance(v, int | float) and not isinstance(v, bool)}}
        save_checkpoint(path, trainer.model, trainer.spec, history=history, metrics=metrics)
        self.saved.append(path)
        return path
