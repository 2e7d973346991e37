"""``python -m training nuclei``: HoVer-Net nuclear instance segmentation of H&E tiles (the
CycleGAN + HoVer-Net recipe, docs/training-recipes.md).

The CycleGAN + HoVer-Net recipe (an IHC -> H&E CycleGAN feeding HoVer-Net) gives no HoVer-Net
hyperparameters, so the recipe follows the HoVer-Net paper (Graham et al., Med. Image Anal. 2019)
and its reference code, adapted to this package's smaller, randomly initialised ``nuclei-hovernet``
network:

* **Targets** NP (nucleus vs background) and HV (per-nucleus horizontal / vertical distance
  to the centre of mass in ``[-1, 1]``), computed per sample after cropping and augmentation
  (:mod:`training.tasks.nuclei.targets`). The net has no type branch, so no TP target.
* **Samples**: random crops of the spec's patch size (256; the real tiles are 512), enough per
  tile and epoch to cover its area once; flips / 90° rotations, colour jitter, HED stain
  augmentation and blur (:func:`training.tasks.nuclei.data.nuclei_augment`); Macenko
  normalisation when the spec's preprocessing lists ``"macenko"`` (``nuclei-hovernet``'s does
  not).
* **Loss** ``CE(np) + Dice(np) + MSE(hv) + 2 MSGE(hv)`` (the paper's weights).
* **Optimiser** Adam, lr 1e-4 divided by 10 after 25 epochs, 50 epochs, batch 8: one of the
  paper's two 50-epoch phases. The paper's first phase trains the decoders of an
  ImageNet-pretrained encoder; this encoder starts from scratch, so all layers train from
  the start.
* **Validation** every epoch on the whole validation tiles (the network pads them to its
  multiple itself): the outputs go through the plugin's post-processing
  (:func:`napari_neuroseg.models.hovernet_post.hovernet_instances`, marker-controlled
  watershed), and the instances are scored with Dice, AJI, PQ, DQ, SQ
  (:func:`training.metrics.nuclei_metrics`, mean over tiles). The best checkpoint is chosen
  on PQ. Split by patient (the converter takes the TCGA patient from the tile name).

The post-processing options are saved in the checkpoint's spec (``extra["postprocess"]``),
so :func:`evaluate` and the plugin segment with the values the model was selected with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel, load_checkpoint
from napari_neuroseg.models.hovernet_post import PostprocessOptions
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training.config import TrainConfig
from training.ddp import DistInfo
from training.loop import Trainer
from training.runfolder import RunFolder
from training.tasks._common import (
    DataError,
    build_spec,
    check_classes_present,
    init_weights,
    is_synthetic,
    make_loaders,
    open_task_dataset,
    optimizer_factory,
    task_split,
    trainer_options,
    write_outputs,
)
from training.tasks.nuclei.data import NucleiTiles, crops_per_tile, nuclei_augment
from training.tasks.nuclei.scoring import (
    METRIC_KEYS,
    instance_scores,
    plot_example,
)
from training.tasks.nuclei.scoring import (  # imported from here by other tasks
    mean_instance_scores as mean_instance_scores,
)
from training.tasks.nuclei.sources import is_source_folder
from training.tasks.nuclei.targets import HoVerNetLoss

NAME = "nuclei"
DATASET_TASK = "nuclei"
HELP = ("HoVer-Net nuclear instance segmentation of H&E tiles (NP + HV maps, watershed; the "
        "CycleGAN + HoVer-Net recipe)")
DESCRIPTION = (
    "Train nuclei-hovernet on a 'nuclei' dataset (RGB tiles with instance masks, e.g. from "
    "convert_nuclei_tiles) with random crops, flips/rotations and colour/stain augmentation, "
    "the HoVer-Net loss (CE + Dice on the nuclear-pixel map, MSE + MSGE on the horizontal/"
    "vertical maps) and a patient-wise validation split; every epoch the validation tiles "
    "are segmented with the plugin's watershed post-processing and scored with Dice, AJI and "
    "PQ (DQ, SQ). Writes checkpoints, history, metrics, plots and report.md."
)
MODEL = "nuclei-hovernet"
#: Post-processing options (:func:`hovernet_instances` keywords) and the Config fields.
POSTPROCESS = PostprocessOptions.names()


@dataclass
class Config(TrainConfig):
    """Options of the ``nuclei`` task (plus those every task shares).

    Attributes
    ----------
    base_features, encoder_depth, blocks_per_level : int or None
        Override the network's width / depth (small runs); None keeps the registry's.
    crop_size : int or None
        Side of the random training crops; None: the spec's patch size (256). Tiles smaller
        than this are padded with white.
    crops_per_tile : int or None
        Crops drawn from each training tile per epoch; None: enough to cover its area once
        (4 for 512 px tiles and 256 px crops).
    val_fraction : float
        Share of patients held out for validation.
    augment : bool
        Flips / 90° rotations, plus the colour steps below, on training crops.
    jitter_p, stain_p, blur_p : float
        Probabilities of colour jitter, HED stain augmentation and Gaussian blur.
    macenko : bool or None
        Macenko-normalise tiles (each fitted on itself); None: when the spec's preprocessing
        lists ``"macenko"``.
    np_ce_weight, np_dice_weight, hv_mse_weight, hv_msge_weight : float
        Loss weights (the paper's 1, 1, 1, 2).
    optimizer : str
        ``adam``, ``adamw`` or ``sgd``.
    lr_step_epochs : int or None
        Multiply the learning rate by ``lr_gamma`` every this many epochs (None: constant).
    lr_gamma : float
    np_threshold, marker_threshold, min_size, ksize
        Post-processing (:func:`~napari_neuroseg.models.hovernet_post.hovernet_instances`):
        foreground probability threshold, marker threshold on the h/v edge energy, smallest
        instance in pixels, Sobel size. ``ksize`` 11 rather than the paper's 21 separates
        touching nuclei of radius 6-12 px (the real tiles' nuclei are about 11 px in radius);
        21 merges those below about 8 px (docs/architectures-classifiers-nuclei.md). Saved in
        the checkpoint's spec.
    marker_radius, keep_unmarked : int, bool
        Post-processing too: the radius of the disc the watershed markers are opened with (2,
        the paper's, at 0.25 µm/px; 1 suits nuclei of 3-7 px radius at 0.5 µm/px) and whether
        a foreground component without a marker is kept as a nucleus (the paper drops it).
    monitor, mode : str
        ``pq`` (or ``aji``, ``dice``, ``val_loss``...) and ``max`` / ``min``.
    sources : list of str or None
        With ``--data`` a folder of datasets (one per source): the sub-folders to train on
        (None: all). See :mod:`training.tasks.nuclei.multi`.
    scale_jitter : float
        Several sources: largest random zoom of a training crop (1.25: ±25 %).
    macenko_p : float
        Several sources: probability of Macenko-normalising a crop towards the stains of a
        random training tile.
    samples_per_epoch : int or None
        Several sources: crops per epoch (None: 16 batches per source).
    n_types : int or None
        Size of the type branch (background included); None: the type map's size when a
        source has types, else no branch.
    tp_ce_weight : float
        Weight of the type branch's cross-entropy.
    """

    base_features: int | None = None
    encoder_depth: int | None = None
    blocks_per_level: int | None = None
    crop_size: int | None = None
    crops_per_tile: int | None = None
    val_fraction: float = 0.2
    augment: bool = True
    jitter_p: float = 0.5
    stain_p: float = 0.5
    blur_p: float = 0.2
    macenko: bool | None = None
    np_ce_weight: float = 1.0
    np_dice_weight: float = 1.0
    hv_mse_weight: float = 1.0
    hv_msge_weight: float = 2.0
    optimizer: str = "adam"
    lr_step_epochs: int | None = 25
    lr_gamma: float = 0.1
    np_threshold: float = PostprocessOptions.np_threshold
    marker_threshold: float = PostprocessOptions.marker_threshold
    min_size: int = PostprocessOptions.min_size
    ksize: int = PostprocessOptions.ksize
    marker_radius: int = PostprocessOptions.marker_radius
    keep_unmarked: bool = PostprocessOptions.keep_unmarked
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    monitor: str = "pq"
    mode: str = "max"
    sources: list[str] | None = None
    scale_jitter: float = 1.25
    macenko_p: float = 0.0
    samples_per_epoch: int | None = None
    n_types: int | None = None
    tp_ce_weight: float = 1.0


def postprocess_options(config: Config | None = None, spec: ModelSpec | None = None
                        ) -> dict[str, Any]:
    """The :func:`hovernet_instances` keywords: the config's, else the spec's, else defaults.

    Raises
    ------
    ValueError
        ``ksize`` not odd and >= 3, or a threshold outside [0, 1] (see
        :class:`~napari_neuroseg.models.hovernet_post.PostprocessOptions`).
    """
    if config is not None:
        return PostprocessOptions(**{key: getattr(config, key) for key in POSTPROCESS}).as_dict()
    return PostprocessOptions.from_spec(spec).as_dict()


def uses_macenko(spec: ModelSpec, setting: bool | None = None) -> bool:
    """Whether tiles are Macenko-normalised: ``setting``, else the spec's preprocessing."""
    return "macenko" in spec.input.preprocessing if setting is None else bool(setting)


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Dice, AJI and PQ (with DQ, SQ) of a checkpoint's instances on every tile of ``data``.

    The whole tiles are segmented with the post-processing options saved in the checkpoint's
    spec (defaults for checkpoints without them), at the model's resolution when the tiles'
    µm/px is known, and compared with the dataset's instance masks on the tiles' grid
    (:mod:`training.tasks.nuclei.native`); the scores are means over tiles, with nucleus-type
    scores when the model and the tiles have types.
    """
    from training.tasks.nuclei.native import model_scores

    return model_scores(loaded, data, np.arange(len(data.items)), device)


def _spec(config: Config, data: Dataset) -> ModelSpec:
    spec = build_spec(MODEL, {"base_features": config.base_features,
                              "encoder_depth": config.encoder_depth,
                              "blocks_per_level": config.blocks_per_level,
                              "n_types": config.n_types},
                      data=data, init=config.init, synthetic=is_synthetic(config, data))
    return replace(spec, extra={**spec.extra, "postprocess": postprocess_options(config),
                                "type_classes": type_classes(spec, config.init)})


def type_classes(spec: ModelSpec, init: str | None = None) -> list[str]:
    """The type names for ``spec``'s type branch: the ``init`` checkpoint's when it has as
    many (a model retrained from the shipped one keeps its types), else CoNSeP's names (or
    ``"type k"``); [] without a type branch."""
    from napari_neuroseg.dataset.convert_consep import NUCLEUS_TYPES
    from napari_neuroseg.models.checkpoint import read_spec

    n_types = spec.arch_kwargs.get("n_types")
    if not n_types:
        return []
    if init:
        try:
            found = list(read_spec(init).extra.get("type_classes") or [])
        except (OSError, ValueError):
            found = []
        if len(found) == n_types:
            return found
    return [NUCLEUS_TYPES.get(k, f"type {k}") for k in range(n_types)]


def _check_patients(data: Dataset) -> None:
    missing = [item.id for item in data.items if item.patient_id is None]
    if missing:
        raise DataError(f"{data.path}: items without a patient id (needed for the patient-wise "
                        f"split): {', '.join(missing[:5])}")


def _check_nuclei(data: Dataset, train_indices: np.ndarray) -> None:
    items = [data.items[int(i)] for i in train_indices]
    counts: dict[int, int] = {}
    for per_item in data.class_pixel_counts(items).values():
        for cid, n in per_item.items():
            counts[cid] = counts.get(cid, 0) + n
    check_classes_present(data, counts)


def fit_best(model: nn.Module, spec: ModelSpec, train, val, loss: nn.Module, evaluate_fn,
             config: Config, dist: DistInfo | None = None):
    """Train (or resume) with the task's optimiser and step schedule; return the trainer, the
    history, the model to report on (the best checkpoint when the run folder has one, else the
    last weights) and ``"best"`` or ``"last"``."""

    def scheduler_factory(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_epochs, config.lr_gamma)

    trainer = Trainer(model, spec, train, val, loss, optimizer_factory(config, config.optimizer),
                      evaluate_fn=evaluate_fn,
                      scheduler_factory=scheduler_factory if config.lr_step_epochs else None,
                      **trainer_options(config, dist))
    history = trainer.fit(resume=config.resume)
    final, weights = trainer.model, "last"
    best = RunFolder(config.out).best if config.out else None
    if best is not None and (dist is None or dist.is_main) and \
            best.with_suffix(".safetensors").exists():
        final, weights = load_checkpoint(best, device=trainer.device).model, "best"
    return trainer, history, final, weights


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) and return the validation metrics of the best checkpoint.

    ``config.data`` a folder of datasets (or ``config.sources`` given) trains on several
    sources (:func:`training.tasks.nuclei.multi.run_sources`).
    """
    if config.sources or is_source_folder(config.data):
        from training.tasks.nuclei.multi import run_sources

        return run_sources(config, dist)
    data = open_task_dataset(config.data, DATASET_TASK)
    _check_patients(data)
    split = task_split(data, config.val_fraction, config.seed)
    _check_nuclei(data, split.train_indices)
    spec = _spec(config, data)
    post = postprocess_options(config)
    model = ModelRegistry().build(spec)
    init_weights(model, config.init)
    crop = int(config.crop_size or spec.input.patch_size[0])
    first = data.items[int(split.train_indices[0])].shape[:2]
    per_tile = config.crops_per_tile or crops_per_tile(tuple(first), crop)
    macenko = uses_macenko(spec, config.macenko)
    augment = nuclei_augment(config.jitter_p, config.stain_p, config.blur_p) \
        if config.augment else None
    train_tiles = NucleiTiles(data, split.train_indices, spec, crop=crop, crops_per_item=per_tile,
                              augment=augment, macenko=macenko)
    val_tiles = NucleiTiles(data, split.val_indices, spec, macenko=macenko)
    train, val = make_loaders(train_tiles, val_tiles, config, dist,
                              val_batch_size=config.batch_size if val_tiles.same_shape else 1)
    loss = HoVerNetLoss(config.np_ce_weight, config.np_dice_weight, config.hv_mse_weight,
                        config.hv_msge_weight)

    def evaluate_fn(net, loader, device):
        scores = instance_scores(net, loader, device, post)
        return {**{k: scores.get(k) for k in METRIC_KEYS}, **loss.pop_terms()}

    trainer, history, final, weights = fit_best(model, spec, train, val, loss, evaluate_fn,
                                                config, dist)
    metrics = instance_scores(final, val, trainer.device, post)
    metrics.update(weights=weights, best_epoch=trainer.best_epoch,
                   train_patients=len(split.train_patients),
                   val_patients=len(split.val_patients),
                   train_tiles=len(split.train_indices), val_tiles=len(split.val_indices))
    plots = []
    if config.out and (dist is None or dist.is_main):
        plots.append(plot_example(final, val_tiles, trainer.device, post,
                                   RunFolder(config.out).plots / "instances.png"))
    write_outputs(config, spec, data, metrics, history, dist=dist, plots=plots, notes=[
        f"Patient-wise split: {len(split.train_patients)} training patient(s) "
        f"({len(split.train_indices)} tiles, {per_tile} random {crop} px crops per tile and "
        f"epoch), {len(split.val_patients)} validation patient(s) ({len(split.val_indices)} "
        "whole tiles).",
        f"Metrics of the {weights} weights (best epoch {trainer.best_epoch} by "
        f"{config.monitor}); post-processing {post}.",
    ])
    return metrics
