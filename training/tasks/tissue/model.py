"""Model side of the ``tissue`` task (the LGG tissue recipe, docs/training-recipes.md): the LGG
spec, GBM transfer, epoch callbacks.

Transfer (``--init``): an 8-class ``gbm-tissue-8`` checkpoint is built and loaded as it was
saved, then :meth:`~napari_neuroseg.models.tissue.TissueSegmenter.replace_head` puts a fresh
8 -> 16 -> 4 mapping head on it (the LGG tissue recipe keeps the 8 GBM outputs and maps them); the
result is exactly the registry architecture of the saved ``lgg-tissue`` spec, with the checkpoint's
widths. A checkpoint that already has the dataset's number of classes is loaded as it is.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import load_checkpoint, read_spec
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training.ddp import wrap_model
from training.loop import Trainer
from training.samplers import RareClassSampler, effective_frequencies
from training.schedules import Phase, ProgressiveUnfreezing, trainable_parameters
from training.tasks._common import DataError, init_weights, training_data_extra
from training.tasks.tissue.data import canonical_class_name

BASE_MODEL = "lgg-tissue"


def lgg_spec(base: ModelSpec, data: Dataset, *, extra: dict[str, Any],
             stain_normalization: bool, folded: bool = False, downscale: int = 1) -> ModelSpec:
    """The trained model's spec: ``base`` with the dataset's class names and resolution.

    With ``folded`` the dataset's classes were folded into ``base``'s, whose names are kept.
    ``downscale`` multiplies the dataset's µm/px (sections shrunk before training).

    The input's preprocessing lists ``macenko`` only when the tiles were stain-normalised;
    the working resolution is the median µm/px of the dataset's tiles when they record one.
    ``extra`` (tissue-mask handling, Macenko target...) is added to the spec's extra, with
    the training data's name and, for a known public set such as IvyGAP, its licence.
    """
    names = base.classes if folded else tuple(data.class_map[i] for i in sorted(data.class_map))
    steps = ("macenko", "tissue_mask") if stain_normalization else ("tissue_mask",)
    mpps = [float(item.region["mpp"]) for item in data.items
            if isinstance(item.region, dict) and item.region.get("mpp")]
    resolution = statistics.median(mpps) * downscale if mpps else base.input.resolution
    return replace(base, classes=names, colors=base.colors[:len(names)],
                   input=replace(base.input, preprocessing=steps, resolution=resolution),
                   extra={**base.extra, **extra, **training_data_extra(data)})


def _target_classes(spec: ModelSpec) -> int:
    kwargs = spec.arch_kwargs
    if kwargs.get("mapping_head", True):
        return int(kwargs.get("n_target_classes", 4))
    return int(kwargs.get("n_source_classes", 8))


def build_model(spec: ModelSpec, init: str | None, *, log=print) -> tuple[nn.Module, ModelSpec]:
    """The network to train and its spec (arch kwargs taken from ``init`` when given).

    Raises
    ------
    DataError
        ``init`` is not a ``tissue`` architecture, or a same-size checkpoint whose classes
        differ from the dataset's.
    """
    n = spec.n_classes
    if not init:
        if spec.arch_kwargs.get("mapping_head", True):
            log(f"warning: no --init: {spec.name} starts from random weights, no GBM weights "
                "are used (the LGG tissue recipe transfers from the GBM model gbm-tissue-8)")
        return ModelRegistry().build(spec), spec
    source = read_spec(init)
    if source.architecture != "tissue":
        raise DataError(f"{init}: architecture {source.architecture!r} ({source.name}); the "
                        "tissue task starts from a 'tissue' checkpoint such as gbm-tissue-8")
    spec = replace(spec, arch_kwargs={**source.arch_kwargs, "mapping_head": True,
                                      "n_target_classes": n},
                   extra={**spec.extra, "source_checkpoint": str(init)})
    if source.arch_kwargs.get("mapping_head", True) and _target_classes(source) == n:
        theirs = [canonical_class_name(c) for c in source.classes]
        if theirs != [canonical_class_name(c) for c in spec.classes]:
            raise DataError(f"{init}: classes {list(source.classes)} differ from the dataset's "
                            f"{list(spec.classes)}")
        model = ModelRegistry().build(spec)
        init_weights(model, init)
        log(f"--init {init}: a {n}-class {source.name} checkpoint, loaded as it is")
        return model, spec
    model = load_checkpoint(init, device="cpu").model
    old = model.out_channels
    model.replace_head(n)
    model.train()
    log(f"--init {init}: {source.name} ({old} classes) loaded; new {old} -> "
        f"{model.hidden_features} -> {n} mapping head")
    return model, spec


def phases(layers: Sequence[int | None], epochs: Sequence[int]) -> tuple[Phase, ...]:
    """Unfreezing phases from the config's parallel lists.

    Raises
    ------
    ValueError
        Lists of different lengths, or empty.
    """
    if not layers or len(layers) != len(epochs):
        raise ValueError(f"phase_layers {list(layers)} and phase_epochs {list(epochs)} must be "
                         "non-empty lists of the same length")
    return tuple(Phase(last_n, int(n)) for last_n, n in zip(layers, epochs, strict=True))


class UnfreezeCallback:
    """Epoch-start callback: progressive unfreezing; rebuilds the optimiser at a phase change.

    Logs ``unfreeze_phase`` and ``trainable_parameters`` into the epoch's history row. Under
    DDP the model is wrapped again at a change, because ``DistributedDataParallel`` only
    synchronises the parameters that were trainable when it was built.
    """

    def __init__(self, model: nn.Module, schedule: Sequence[Phase]) -> None:
        self.schedule = ProgressiveUnfreezing(model, schedule)

    def __call__(self, trainer: Trainer, epoch: int) -> None:
        """Apply the phase of ``epoch``."""
        if self.schedule.apply(epoch):
            trainer.rebuild_optimizer()
            if trainer.dist.distributed:
                trainer.net = wrap_model(trainer.model, trainer.device, trainer.dist)
        trainer.log("unfreeze_phase", self.schedule.current)
        trainer.log("trainable_parameters", trainable_parameters(trainer.model))


class FrequencyLogger:
    """Epoch-start callback: the effective class pixel shares of the epoch's draws.

    Parameters
    ----------
    counts : numpy.ndarray
        Per-training-tile pixel counts ``(n_tiles, n_classes)``.
    names : sequence of str
    sampler : RareClassSampler, optional
        Without one every tile counts once.
    log : callable
        Where the line goes (``print`` on rank 0).
    """

    def __init__(self, counts: np.ndarray, names: Sequence[str],
                 sampler: RareClassSampler | None = None, log=print) -> None:
        self.counts, self.names, self.sampler, self.log = counts, list(names), sampler, log

    def frequencies(self) -> dict[str, float]:
        """This epoch's class shares by name."""
        if self.sampler is None:
            shares = effective_frequencies(self.counts, np.ones(len(self.counts)))
        else:
            shares = self.sampler.epoch_frequencies(self.counts)
        return {name: round(float(v), 6) for name, v in zip(self.names, shares, strict=True)}

    def __call__(self, trainer: Trainer, epoch: int) -> None:
        """Log and print the frequencies of ``epoch`` (the sampler's epoch is set already)."""
        shares = self.frequencies()
        trainer.log("class_frequencies", shares)
        if trainer.dist.is_main:
            self.log(f"epoch {epoch}: effective class frequencies "
                     + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items()))
