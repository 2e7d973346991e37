"""The CT metastasis recipe's curriculum in the ``ct`` task's :class:`training.loop.Trainer`.

:class:`CurriculumSwitch` is both the trainer's optimiser factory and an epoch-start callback:
when an epoch opens a new stage it asks the trainer to rebuild its optimiser, which the
factory answers with :meth:`training.schedules.Curriculum.optimizer_for` (new groups, the
stage's learning rates, Adam moments carried over). Each epoch's history row gets
``curriculum``: the stage, its trainable parameter count and the rate of each group.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from training.ddp import wrap_model
from training.loop import Trainer
from training.schedules import Curriculum

__all__ = ["GROUPS", "CurriculumSwitch", "build_curriculum"]

#: Parameter groups of ResNet50Slice added one per stage: head, then layer4, then layer3.
GROUPS = ("classifier", "layer4", "layer3")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_curriculum(model: nn.Module, starts: Sequence[int], lrs: Sequence[float],
                     optimizer: str = "adam", weight_decay: float = 0.0) -> Curriculum:
    """The staged fine-tuning of ``model``: stage ``k`` trains ``GROUPS[: k + 1]``.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`~napari_neuroseg.models.resnet.ResNet50Slice`.
    starts : sequence of int
        First epoch of each stage (the recipe: 0, 5, 12); one to three stages.
    lrs : sequence of float
        Rates of the head, layer4 and layer3 (the recipe: 5e-5, 1e-5, 5e-6).
    optimizer : {"adam", "adamw"}
    weight_decay : float

    Raises
    ------
    ValueError
        Not one to three stages, start epochs not 0 then increasing, unknown optimiser.
    """
    starts = [int(s) for s in starts]
    if not 1 <= len(starts) <= len(GROUPS) or len(lrs) != len(GROUPS):
        raise ValueError(f"stage_starts needs 1 to 3 epochs (head, + layer4, + layer3), got "
                         f"{starts}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, not {optimizer!r}")
    rates = dict(zip(GROUPS, (float(lr) for lr in lrs), strict=True))
    stages = [(start, {g: rates[g] for g in GROUPS[: k + 1]}) for k, start in enumerate(starts)]

    def make(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return OPTIMIZERS[optimizer](groups, weight_decay=weight_decay)

    return Curriculum(model, stages, make)


class CurriculumSwitch:
    """Optimiser factory and epoch-start callback that walk a :class:`Curriculum`.

    Pass :meth:`optimizer` as the trainer's ``optimizer_factory`` and the object itself as a
    callback. It depends only on the epoch, so ``--resume`` replays it correctly.

    Parameters
    ----------
    curriculum : Curriculum
    verbose : bool
        Print a line when a stage starts.
    """

    def __init__(self, curriculum: Curriculum, verbose: bool = True) -> None:
        self.curriculum, self.verbose, self.epoch = curriculum, verbose, 0

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimiser of the current epoch's stage (``model`` is the curriculum's)."""
        return self.curriculum.optimizer_for(self.epoch)

    def __call__(self, trainer: Trainer, epoch: int) -> None:
        """Switch stage when ``epoch`` starts a new one; log the stage in the history row."""
        self.epoch = epoch
        curriculum = self.curriculum
        if curriculum.stage_at(epoch) != curriculum.current:
            trainer.rebuild_optimizer()
            if trainer.dist.distributed:
                # DDP reduces only the parameters trainable when it was built: wrap again,
                # after the old wrapper (and its autograd hooks) is gone.
                trainer.net = trainer.model
                gc.collect()
                trainer.net = wrap_model(trainer.model, trainer.device, trainer.dist)
            if self.verbose:
                print(f"epoch {epoch}: curriculum stage {curriculum.current + 1}, training "
                      f"{', '.join(curriculum.lrs_at(epoch))}", flush=True)
        trainer.log("curriculum", {
            "stage": curriculum.current + 1,
            "trainable_params": curriculum.trainable_count(),
            "lrs": {g["name"]: g["lr"] for g in trainer.optimizer.param_groups},
        })
