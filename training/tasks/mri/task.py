"""``python -m training mri``: FLAIR abnormality segmentation of LGG MRI slices (the FLAIR MRI
recipe, docs/training-recipes.md).

U-Net (the write-up's 5-floor model, ``mri-flair-unet``) or TransUNet (``mri-flair-transunet``) on
the 3-channel (pre-contrast, FLAIR, post-contrast) slices of a dataset in the export layout
(docs/dataset-format.md; ``napari_neuroseg.dataset.convert_kaggle_lgg`` converts a Kaggle
``kaggle_3m`` folder). Patient-wise validation split, stratified by whether a patient has a
tumour slice, or patient-wise k-fold (:mod:`training.tasks.mri.split`); per-slice and
per-volume Dice, sensitivity on tumour slices and false positives on empty slices
(:class:`training.metrics.MRIMetrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from training.augment import mri_augment
from training.config import TrainConfig
from training.ddp import DistInfo
from training.loop import Trainer
from training.losses import make_loss
from training.metrics import MRIMetrics
from training.tasks._common import (
    DataError,
    build_spec,
    check_classes_present,
    class_counts,
    init_weights,
    is_synthetic,
    make_loaders,
    open_task_dataset,
    optimizer_factory,
    trainer_options,
    write_outputs,
)
from training.tasks.mri.split import mri_split

NAME = "mri"
DATASET_TASK = "mri"
HELP = "FLAIR abnormality segmentation of LGG MRI slices (U-Net / TransUNet, the FLAIR MRI recipe)"
DESCRIPTION = (
    "Train mri-flair-unet (or model: mri-flair-transunet in --config) on a dataset in the "
    "export layout (docs/dataset-format.md), with a patient-wise validation split and a "
    "CE + Dice loss; writes checkpoints, history, metrics (per-slice and per-volume Dice, "
    "false positives on empty slices), plots and report.md."
)
MODELS = ("mri-flair-unet", "mri-flair-transunet")


@dataclass
class Config(TrainConfig):
    """Options of the ``mri`` task (plus those every task shares).

    Attributes
    ----------
    model : str
        ``mri-flair-unet`` or ``mri-flair-transunet``.
    base_features : int or None
        Override the network width (small runs); None keeps the registry's.
    arch : dict
        Further architecture keywords over the registry's, e.g. ``{depth: 4, deep_convs:
        [2, 2, 3, 3]}`` for the FLAIR MRI recipe's 4-floor U-Net with triple deep convolutions, or
        the TransUNet's ``embed_dim`` / ``num_layers`` (``base_features`` above wins).
    lr_schedule : str
        ``constant``, or ``cosine``: the rate falls from ``lr`` towards 0 over ``epochs`` along
        a half cosine (stepped per epoch), so that the last epoch's weights, which a
        cross-validation keeps, are not the noisy ones of a constant high rate.
    prior_bias : bool
        Start the output bias at the log-odds of the training pixels' abnormal share (about
        -4.5 for 1 %), as for RetinaNet: from a bias of 0 every pixel starts at p = 0.5, and
        Adam, which moves a parameter by about ``lr`` per step, needs thousands of steps to
        bring the background down (a short CPU run then ends with p ~ 0.2 everywhere).
        Not applied when ``init`` gives the weights.
    samples_per_epoch : int or None
        Training slices drawn per epoch (a fresh random draw each epoch, without repeats until
        every slice has been seen); None is one pass over the training slices.
    loss : str
        ``ce``, ``dice``, ``ce+dice``, ``focal``, ``focal+dice``.
    val_fraction : float
        Share of patients held out for validation; 0 trains on every patient (the final
        model; use ``monitor: train_loss``).
    augment : bool
        Flips, 90° rotations, small affine, colour jitter and cutout on training slices.
    threshold : float
        Probability above which a pixel is abnormal, for the metrics.
    stratify_tumour : bool
        Stratify the patient split by whether a patient has any abnormal slice, so that both
        sides get tumour slices (:func:`training.tasks.mri.split.mri_split`).
    folds, fold : int
        ``folds >= 2``: patient-wise cross-validation, this run validates on fold ``fold``
        (``0 .. folds - 1``); ``0`` is the usual ``val_fraction`` split.
    """

    model: str = "mri-flair-unet"
    base_features: int | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    samples_per_epoch: int | None = None
    lr_schedule: str = "constant"
    prior_bias: bool = True
    loss: str = "ce+dice"
    val_fraction: float = 0.2
    augment: bool = True
    threshold: float = 0.5
    stratify_tumour: bool = True
    folds: int = 0
    fold: int = 0
    lr: float = 1e-4
    monitor: str = "slice_dice"
    mode: str = "max"


class SliceData(TorchDataset):
    """Slices of an export-layout dataset as normalised ``(3, H, W)`` tensors and masks."""

    def __init__(self, data: Dataset, indices: np.ndarray, spec: ModelSpec, augment: bool):
        self.data, self.indices, self.spec = data, [int(i) for i in indices], spec
        self.augment = mri_augment() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.data.items[self.indices[i]]
        image = self.data.read_image(item)
        mask = self.data.read_mask(item)
        if self.augment is not None:  # seeded from torch, which the trainer seeds per epoch
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
            image, mask = self.augment(image, mask, rng)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
        x = normalize(x[None], self.spec.input.normalization)[0]
        y = torch.from_numpy(np.ascontiguousarray(mask, np.int64))
        return x, y, self.indices[i]


def _spec(config: Config, data: Dataset) -> ModelSpec:
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {config.model!r}")
    overrides = {**config.arch, "base_features": config.base_features}
    return build_spec(config.model, overrides, data=data,
                      init=config.init, synthetic=is_synthetic(config, data))


def prior_bias(model: torch.nn.Module, counts: dict[int, int]) -> float:
    """Set the binary head's bias to ``log(f / (1 - f))`` for the abnormal pixel share ``f``
    of ``counts`` (class id -> pixels); returns the bias (0 when there is no head to set)."""
    head = getattr(model, "head", None)
    total = sum(counts.values())
    if not isinstance(head, torch.nn.Conv2d) or head.out_channels != 1 or head.bias is None \
            or total == 0:
        return 0.0
    share = min(max(counts.get(1, 0) / total, 1e-4), 0.5)
    value = float(np.log(share / (1 - share)))
    with torch.no_grad():
        head.bias.fill_(value)
    return value


def _scheduler_factory(config: Config):
    """``optimizer -> scheduler`` for ``config.lr_schedule`` (None: a constant rate)."""
    if config.lr_schedule == "constant":
        return None
    if config.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {config.lr_schedule!r}")
    return lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(config.epochs, 1))


def _check(data: Dataset) -> None:
    missing = [item.id for item in data.items if item.patient_id is None]
    if missing:
        raise DataError(f"{data.path}: items without a patient id (needed for the patient-wise "
                        f"split): {', '.join(missing[:5])}")


def _slice_metrics(model: torch.nn.Module, loader, device: torch.device, data: Dataset,
                   threshold: float) -> dict[str, float]:
    metrics = MRIMetrics()
    model.eval()
    with torch.inference_mode():
        for x, y, index in loader:
            prob = torch.sigmoid(model(x.to(device)))[:, 0].float().cpu().numpy()
            ids = [data.items[int(i)].patient_id or data.items[int(i)].id for i in index]
            metrics.update(y.numpy() > 0, prob >= threshold, ids)
    return {k: v for k, v in metrics.compute().items() if isinstance(v, int | float)}


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Per-slice and per-volume Dice and false positives on empty slices of ``data``."""
    loader = DataLoader(SliceData(data, np.arange(len(data.items)), loaded.spec, False),
                        batch_size=batch_size)
    model = loaded.model.to(device)
    return _slice_metrics(model, loader, device, data, loaded.spec.threshold)


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) and return the final validation metrics."""
    data = open_task_dataset(config.data, DATASET_TASK)
    _check(data)
    spec = _spec(config, data)
    model = ModelRegistry().build(spec)
    init_weights(model, config.init)
    split = mri_split(data, config.val_fraction, config.seed,
                      stratify_tumour=config.stratify_tumour, folds=config.folds,
                      fold=config.fold)
    counts = class_counts(data, split.train_indices)
    check_classes_present(data, counts)
    if config.prior_bias and not config.init:
        prior_bias(model, counts)
    # provenance: which patients the weights saw (the demo and the UI can tell a held-out one)
    spec = replace(spec, extra={**spec.extra,
                                "training_patients": [str(p) for p in split.train_patients]})
    train_set = SliceData(data, split.train_indices, spec, config.augment)
    sampler = None
    if config.samples_per_epoch:
        sampler = RandomSampler(train_set, num_samples=config.samples_per_epoch,
                                generator=torch.Generator().manual_seed(config.seed))
    val_set = SliceData(data, split.val_indices, spec, False) if len(split.val_indices) else None
    train, val = make_loaders(train_set, val_set, config, dist, sampler=sampler)

    def evaluate_fn(net, loader, device):
        return _slice_metrics(net, loader, device, data, config.threshold)

    trainer = Trainer(model, spec, train, val, make_loss(config.loss),
                      optimizer_factory(config), evaluate_fn=evaluate_fn if val else None,
                      scheduler_factory=_scheduler_factory(config),
                      **trainer_options(config, dist))
    history = trainer.fit(resume=config.resume)
    metrics = evaluate_fn(trainer.model, val, trainer.device) if val else {}
    metrics.update(train_patients=len(split.train_patients), val_patients=len(split.val_patients))
    fold = f" (fold {config.fold} of {config.folds})" if config.folds >= 2 else ""
    write_outputs(config, spec, data, metrics, history, dist=dist,
                  notes=[f"Patient-wise split{fold}: {len(split.train_patients)} training, "
                         f"{len(split.val_patients)} validation patients "
                         f"({metrics.get('tumour_slices', 0)} validation tumour slices)."])
    return metrics
