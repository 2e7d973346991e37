"""Epoch schedules: progressive unfreezing (the LGG tissue recipe, docs/training-recipes.md) and
the CT curriculum (the CT metastasis recipe).

:class:`ProgressiveUnfreezing` walks a :class:`~napari_neuroseg.models.tissue.TissueSegmenter`
through phases (head only, then the last 10, 25 and 50 layers, then everything) by calling
``model.set_trainable(last_n)`` when a phase starts. One optimizer over all parameters is
enough there: frozen parameters get no gradient and ``torch.optim`` skips them.

:class:`Curriculum` walks a :class:`~napari_neuroseg.models.resnet.ResNet50Slice` through the CT
metastasis recipe's three stages (classifier at 5e-5; + layer4 at 1e-5; + layer3 at 5e-6, starting
at epochs 0, 5 and 12) and rebuilds the optimizer's parameter groups when the stage changes,
carrying over the optimizer state of parameters that were already training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from napari_neuroseg.models.resnet import curriculum_stage


@dataclass(frozen=True)
class Phase:
    """One unfreezing phase.

    Attributes
    ----------
    last_n : int or None
        Layers before the head that train (``0``: head only; ``None``: everything).
    epochs : int
        Length in epochs (the last phase lasts until the run ends).
    lr : float or None
        Learning rate to set when the phase starts (``None``: leave it).
    """

    last_n: int | None
    epochs: int
    lr: float | None = None


# The LGG tissue recipe: head, last 10, 25, 50 layers, then all. It gives no phase lengths: 5
# epochs each.
LGG_TRANSFER_PHASES = (Phase(0, 5), Phase(10, 5), Phase(25, 5), Phase(50, 5), Phase(None, 5))


def _as_phase(item: Phase | Sequence[Any]) -> Phase:
    phase = item if isinstance(item, Phase) else Phase(*item)
    if phase.epochs < 1:
        raise ValueError(f"a phase lasts at least one epoch, got {phase}")
    return phase


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameter values with ``requires_grad`` in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


class ProgressiveUnfreezing:
    """Unfreeze a model phase by phase, by epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Anything with ``set_trainable(last_n) -> int`` (``TissueSegmenter``).
    phases : sequence of Phase or (last_n, epochs[, lr]) tuples
        Default :data:`LGG_TRANSFER_PHASES`.
    """

    def __init__(
        self, model: nn.Module, phases: Iterable[Phase | Sequence[Any]] = LGG_TRANSFER_PHASES
    ) -> None:
        self.model = model
        self.phases = tuple(_as_phase(p) for p in phases)
        if not self.phases:
            raise ValueError("ProgressiveUnfreezing needs at least one phase")
        self.current: int | None = None

    def phase_at(self, epoch: int) -> int:
        """Index of the phase that epoch ``epoch`` (0-based) belongs to."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        end = 0
        for index, phase in enumerate(self.phases):
            end += phase.epochs
            if epoch < end:
                return index
        return len(self.phases) - 1

    def apply(self, epoch: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Set the phase of ``epoch`` on the model (and its lr on ``optimizer``).

        Returns
        -------
        bool
            True when the phase changed (the first call always changes it).
        """
        index = self.phase_at(epoch)
        if index == self.current:
            return False
        phase = self.phases[index]
        self.model.set_trainable(phase.last_n)
        if optimizer is not None and phase.lr is not None:
            set_lr(optimizer, phase.lr)
        self.current = index
        return True

    def trainable_counts(self) -> list[int]:
        """Trainable parameter values in each phase (the model is left in the current phase)."""
        counts = [self.model.set_trainable(phase.last_n) for phase in self.phases]
        current = self.current
        if current is not None:
            self.model.set_trainable(self.phases[current].last_n)
        else:
            self.model.requires_grad_(True)
            self.model.train(self.model.training)
        return counts


def _default_stages() -> tuple[tuple[int, dict[str, float]], ...]:
    return ((0, curriculum_stage(1)), (5, curriculum_stage(2)), (12, curriculum_stage(3)))


def _default_optimizer(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups)


@dataclass
class Curriculum:
    """The CT metastasis recipe's staged fine-tuning with per-group learning rates, switching by
    epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Anything with ``set_trainable(groups)`` and ``param_groups(lrs=...)``
        (``ResNet50Slice``).
    stages : sequence of (start_epoch, {group: lr})
        Default: epoch 0 ``{classifier: 5e-5}``, epoch 5 ``+ {layer4: 1e-5}``, epoch 12
        ``+ {layer3: 5e-6}``.
    make_optimizer : callable
        ``make_optimizer(param_groups) -> Optimizer``; default ``torch.optim.Adam`` (the write-up
        does not name its optimizer).
    """

    model: nn.Module
    stages: Sequence[tuple[int, Mapping[str, float]]] = field(default_factory=_default_stages)
    make_optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] = _default_optimizer
    current: int | None = field(default=None, init=False)
    optimizer: torch.optim.Optimizer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        starts = [int(start) for start, _ in self.stages]
        if not starts or starts[0] != 0 or starts != sorted(set(starts)):
            raise ValueError(f"stage start epochs must begin at 0 and increase, got {starts}")

    def stage_at(self, epoch: int) -> int:
        """0-based index of the stage epoch ``epoch`` belongs to."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return max(i for i, (start, _) in enumerate(self.stages) if epoch >= start)

    def lrs_at(self, epoch: int) -> dict[str, float]:
        """``{group: lr}`` that trains at ``epoch``."""
        return dict(self.stages[self.stage_at(epoch)][1])

    def optimizer_for(self, epoch: int) -> torch.optim.Optimizer:
        """The optimizer for ``epoch``: the same one within a stage, a new one at a switch.

        At a switch the model's trainable groups change (``set_trainable``) and the new
        optimizer's groups get the stage's rates; the state (e.g. Adam moments) of parameters
        that trained before is carried over.
        """
        index = self.stage_at(epoch)
        if index == self.current and self.optimizer is not None:
            return self.optimizer
        lrs = self.lrs_at(epoch)
        self.model.set_trainable(lrs)
        optimizer = self.make_optimizer(self.model.param_groups(lrs=lrs))
        if self.optimizer is not None:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param in self.optimizer.state:
                        optimizer.state[param] = self.optimizer.state[param]
        self.current, self.optimizer = index, optimizer
        return optimizer

    def trainable_count(self) -> int:
        """Trainable parameter values of the model now."""
        return trainable_parameters(self.model)
