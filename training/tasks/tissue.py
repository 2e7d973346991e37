"""``python -m training tissue``: LGG H&E tissue regions by transfer from the GBM model (seed 000).

Four classes (background, cellular tumour, leading edge, infiltrating tumour) from a dataset
of H&E tiles and masks in the export layout (docs/dataset-format.md), starting from the
8-class GBM model ``gbm-tissue-8`` (``--init``) with a new 8 -> 16 -> 4 mapping head. Seed
000's recipe: tissue-aware masks (HSV tissue detection), Macenko stain normalisation,
rare-class oversampling by the rarest class in each tile (infiltrating tumour 20x, leading
edge 5x; the "le-focused" variant: leading edge 3x), progressive unfreezing (head, then the
last 10, 25 and 50 layers, then all), stain and geometric augmentation. Reported per epoch
and at the end: per-class Dice, recall and precision, the confusion matrix, mean Dice and the
highest probability of the rare classes (seed 000 tracked "LE max probability").

Where the seed is silent (phase lengths, learning rate, loss) the choices are documented on
:class:`Config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel
from napari_neuroseg.models.spec import ModelSpec
from training.config import TrainConfig
from training.ddp import DistInfo
from training.loop import Trainer
from training.losses import class_weights_from_frequencies, make_loss
from training.runfolder import RunFolder
from training.samplers import (
    LGG_IT,
    LGG_LE,
    SEED000_EXTREME_RATES,
    SEED000_LE_FOCUSED_RATES,
    RareClassSampler,
)
from training.split import PatientSplit
from training.tasks._common import (
    DataError,
    build_spec,
    check_classes_present,
    is_synthetic,
    make_loaders,
    open_task_dataset,
    optimizer_factory,
    task_split,
    trainer_options,
    write_outputs,
)
from training.tasks.tissue_data import (
    IGNORE_INDEX,
    STAIN_FIT_MODES,
    TISSUE_MASK_MODES,
    TileData,
    TilePrep,
    canonical_class_name,
    check_class_map,
    check_tiles,
    prep_for_spec,
    stain_target,
    target_record,
)
from training.tasks.tissue_metrics import epoch_row, evaluate_segmentation, write_plots
from training.tasks.tissue_model import (
    BASE_MODEL,
    FrequencyLogger,
    UnfreezeCallback,
    build_model,
    lgg_spec,
    phases,
)

NAME = "tissue"
DATASET_TASK = "tissue"
HELP = "LGG H&E tissue regions by transfer from the 8-class GBM model (seed 000)"
DESCRIPTION = (
    "Fine-tune lgg-tissue (background, cellular tumour, leading edge, infiltrating tumour) "
    "from a gbm-tissue-8 checkpoint (--init) on H&E tiles in the export layout "
    "(docs/dataset-format.md): tissue-aware masks, Macenko stain normalisation, rare-class "
    "oversampling (IT 20x, LE 5x), progressive unfreezing and class-weighted cross-entropy; "
    "writes checkpoints, history (with the effective class frequencies and trainable "
    "parameters of every epoch), metrics (per-class Dice, recall, precision, confusion "
    "matrix), plots and report.md."
)
OVERSAMPLING = {"extreme": SEED000_EXTREME_RATES, "le-focused": SEED000_LE_FOCUSED_RATES,
                "none": {}}
RARE_NAMES = ("leading edge", "infiltrating tumour")


@dataclass
class Config(TrainConfig):
    """Options of the ``tissue`` task (plus those every task shares).

    Attributes
    ----------
    base_features, depth : int or None
        Width and floors of a fresh network (without ``--init``; a checkpoint keeps its own).
    val_fraction : float
        Share of patients (slides when tiles have no patient) held out for validation; the
        split is stratified by the rarest class of each patient's tiles when possible.
    oversampling : str
        ``extreme`` (seed 000's final recipe: IT 20x, LE 5x), ``le-focused`` (LE 3x) or
        ``none``. A tile is repeated at the rate of the rarest class it contains.
    it_oversample, le_oversample : float or None
        Override the preset's rate of infiltrating tumour / leading edge tiles.
    phase_layers : list of int or null
        Progressive unfreezing: layers before the head that train in each phase (``0``: head
        only; ``null``: all). Seed 000: head, 10, 25, 50, all. ``[null]`` trains everything
        from the start (the seed's "fully unfrozen" variant).
    phase_epochs : list of int
        Length of each phase (the last lasts to the end). The seed gives none: 5 each.
    loss : str
        ``ce``, ``focal``, ``dice``, ``ce+dice`` or ``focal+dice``.
    class_weighting : str
        Weights of ``ce``/``focal`` from the effective (oversampled) pixel frequencies:
        ``median`` (median-frequency balancing), ``inverse``, ``inverse_sqrt`` or ``none``.
        The seed names no loss; weighting the frequencies *after* oversampling corrects the
        imbalance left over without compounding the two.
    class_weights : list of float or None
        Explicit class weights (override ``class_weighting``).
    focal_gamma, dice_weight : float
        Focal loss focusing parameter; weight of the Dice term in combinations.
    stain_normalization : bool
        Macenko normalisation of every tile (seed 000: on).
    stain_reference : str or None
        Item id of the tile whose stains are the target; None: the first training tile.
    stain_fit : str
        Estimate each tile's source stains per ``slide`` (pooled over its tiles, as the
        plugin does per slide at inference) or per ``tile`` (staintools' way; the slide's
        estimate where a tile has too little tissue).
    tissue_mask : str
        What the HSV tissue mask does to annotated non-tissue pixels: ``relabel`` to
        background (seed 000's tissue-aware masks), ``ignore`` (left out of loss and
        metrics) or ``off``.
    saturation_min, value_max : float
        HSV thresholds of tissue (seed 000: saturation > 15, value < 240).
    mask_kernel : int
        Square kernel of the mask's closing and opening (seed 000: 5).
    augment : bool
        Flips, 90 degree turns, small affine and HED stain jitter on training tiles.
    optimizer : str
        ``adam`` (the seed's Keras default), ``adamw`` or ``sgd``.
    """

    base_features: int | None = None
    depth: int | None = None
    val_fraction: float = 0.2
    oversampling: str = "extreme"
    it_oversample: float | None = None
    le_oversample: float | None = None
    phase_layers: tuple[int | None, ...] = (0, 10, 25, 50, None)
    phase_epochs: tuple[int, ...] = (5, 5, 5, 5, 5)
    loss: str = "ce"
    class_weighting: str = "median"
    class_weights: tuple[float, ...] | None = None
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    stain_normalization: bool = True
    stain_reference: str | None = None
    stain_fit: str = "slide"
    tissue_mask: str = "relabel"
    saturation_min: float = 15.0
    value_max: float = 240.0
    mask_kernel: int = 5
    augment: bool = True
    optimizer: str = "adam"
    epochs: int = 25
    lr: float = 1e-4
    monitor: str = "mean_dice"
    mode: str = "max"


def _rates(config: Config) -> dict[int, float]:
    if config.oversampling not in OVERSAMPLING:
        raise ValueError(f"oversampling must be one of {sorted(OVERSAMPLING)}, not "
                         f"{config.oversampling!r}")
    rates = dict(OVERSAMPLING[config.oversampling])
    for cls, rate in ((LGG_IT, config.it_oversample), (LGG_LE, config.le_oversample)):
        if rate is not None:
            rates[cls] = float(rate)
    return rates


def _rarest_rank(counts: dict[int, int]) -> int:
    """2 for tiles with infiltrating tumour, 1 with leading edge, else 0 (split strata)."""
    return 2 if counts.get(LGG_IT, 0) else 1 if counts.get(LGG_LE, 0) else 0


def _split(data: Dataset, config: Config, raw: dict[str, dict[int, int]]) -> PatientSplit:
    strata = [_rarest_rank(raw[item.id]) for item in data.items]
    try:
        return task_split(data, config.val_fraction, config.seed, stratify=strata)
    except ValueError as err:  # every stratum has a single patient: split unstratified
        if isinstance(err, DataError):
            raise
        return task_split(data, config.val_fraction, config.seed)


def _class_weights(config: Config, expected: np.ndarray) -> list[float] | None:
    if config.class_weights is not None:
        if len(config.class_weights) != expected.size:
            raise ValueError(f"class_weights needs {expected.size} values, got "
                             f"{list(config.class_weights)}")
        return [float(w) for w in config.class_weights]
    if config.class_weighting == "none":
        return None
    weights = class_weights_from_frequencies(expected, config.class_weighting)
    return [round(float(w), 6) for w in weights]


def _rare(names: tuple[str, ...]) -> list[int]:
    canonical = [canonical_class_name(n) for n in names]
    return [canonical.index(n) for n in RARE_NAMES if n in canonical]


def _check_config(config: Config) -> None:
    """Refuse unknown option values before any data is read."""
    choices = {"tissue_mask": TISSUE_MASK_MODES, "stain_fit": STAIN_FIT_MODES,
               "class_weighting": ("median", "inverse", "inverse_sqrt", "none"),
               "optimizer": ("adam", "adamw", "sgd")}
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, not "
                             f"{getattr(config, key)!r}")
    make_loss(config.loss)


def _prepare(config: Config, data: Dataset, split: PatientSplit, base: ModelSpec,
             log: Callable[..., None]) -> tuple[ModelSpec, nn.Module, TilePrep, np.ndarray]:
    """Stain target, spec, model, fitted tile preparation and prepared training counts."""
    train_idx, val_idx = split.train_indices, split.val_indices
    hsv = {"saturation_min": config.saturation_min, "value_max": config.value_max,
           "kernel": config.mask_kernel}
    target = stain_target(data, config.stain_reference, int(train_idx[0]), hsv) \
        if config.stain_normalization else None
    extra: dict[str, Any] = {"tissue_mask_mode": config.tissue_mask, "tissue_mask_hsv": hsv,
                             "stain_fit": config.stain_fit}
    if target is not None:
        extra["macenko_target"] = target_record(target)
    spec = lgg_spec(base, data, extra=extra, stain_normalization=target is not None)
    model, spec = build_model(spec, config.init, log=log)
    everything = np.concatenate([train_idx, val_idx])
    check_tiles(data, everything, model.size_multiple)
    prep = TilePrep(data, config.tissue_mask, hsv, target, config.stain_fit)
    failed = prep.fit_slides(everything)
    if failed:
        log(f"warning: stains of {len(failed)} slide(s) could not be estimated (too little "
            f"tissue); their tiles are not normalised: {', '.join(failed[:5])}")
    counts = prep.class_counts(train_idx, len(spec.classes))
    if config.tissue_mask != "off":
        check_classes_present(data, dict(enumerate(counts.sum(0).tolist())),
                              where="training split once non-tissue pixels are background"
                              if config.tissue_mask == "relabel" else
                              "tissue pixels of the training split")
    return spec, model, prep, counts


def _shares(names: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) and return the final validation metrics."""
    main_rank = dist is None or dist.is_main
    log = print if main_rank else (lambda *a, **k: None)
    _check_config(config)
    rates, schedule = _rates(config), phases(config.phase_layers, config.phase_epochs)
    data = open_task_dataset(config.data, DATASET_TASK)
    base = build_spec(BASE_MODEL, {"base_features": config.base_features, "depth": config.depth},
                      synthetic=is_synthetic(config, data), data=data)
    check_class_map(data.class_map, base.classes, str(data.path))
    raw = data.class_pixel_counts()
    split = _split(data, config, raw)
    train_idx, val_idx = split.train_indices, split.val_indices
    check_classes_present(data, {c: sum(raw[data.items[i].id][c] for i in train_idx)
                                 for c in data.class_map})
    spec, model, prep, counts = _prepare(config, data, split, base, log)
    names, rare = spec.classes, _rare(spec.classes)
    sampler = RareClassSampler(counts, rates, seed=config.seed,
                               num_replicas=dist.world_size if dist else 1,
                               rank=dist.rank if dist else 0) if rates else None
    expected = sampler.expected_frequencies(counts) if sampler else counts.sum(0) / counts.sum()
    weights = _class_weights(config, expected)
    train, val = make_loaders(TileData(prep, train_idx, spec, config.augment),
                              TileData(prep, val_idx, spec, False), config, dist,
                              sampler=sampler)

    def evaluate_fn(net, loader, device):
        return epoch_row(evaluate_segmentation(net, loader, device, names, rare, len(loader),
                                               config.seed).summary)

    loss = make_loss(config.loss, class_weights=weights, focal_gamma=config.focal_gamma,
                     dice_weight=config.dice_weight, ignore_index=IGNORE_INDEX)
    trainer = Trainer(model, spec, train, val, loss, optimizer_factory(config, config.optimizer),
                      callbacks=[UnfreezeCallback(model, schedule),
                                 FrequencyLogger(counts, names, sampler, log=log)],
                      evaluate_fn=evaluate_fn, **trainer_options(config, dist))
    history = trainer.fit(resume=config.resume)
    final = evaluate_segmentation(trainer.model, val, trainer.device, names, rare, len(val),
                                  config.seed)
    metrics = {**final.summary,
               "class_frequencies": {"dataset": _shares(names, counts.sum(0) / counts.sum()),
                                     "expected_oversampled": _shares(names, expected)},
               "class_weights": weights,
               "oversampling_rates": {names[c]: r for c, r in rates.items()},
               "trainable_parameters": history.get("trainable_parameters", []),
               "train_tiles": int(train_idx.size), "val_tiles": int(val_idx.size),
               "train_patients": len(split.train_patients),
               "val_patients": len(split.val_patients)}
    plots = write_plots(final, rare, RunFolder(Path(config.out)).plots) \
        if config.out and main_rank else []
    notes = [f"Patient-wise split: {len(split.train_patients)} training, "
             f"{len(split.val_patients)} validation patients "
             f"({train_idx.size} / {val_idx.size} tiles).",
             "Final metrics: the last epoch's model on the validation tiles; "
             f"{'GBM transfer from ' + config.init if config.init else 'no GBM weights'}."]
    write_outputs(config, spec, data, metrics, history, plots=plots, notes=notes, dist=dist)
    return metrics


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Per-class Dice, recall, precision, confusion matrix and rare-class maxima on ``data``.

    The tiles get the stain normalisation and tissue-mask handling the checkpoint recorded.

    Raises
    ------
    DataError
        The dataset's class map differs from the checkpoint's classes, or bad tiles.
    """
    spec = loaded.spec
    if len(data.class_map) != spec.n_classes or any(
            canonical_class_name(data.class_map.get(i, "")) != canonical_class_name(name)
            for i, name in enumerate(spec.classes)):
        raise DataError(f"{data.path}: class map {data.class_map} does not agree with the "
                        f"classes of checkpoint {loaded.path} {list(spec.classes)}")
    everything = np.arange(len(data.items))
    check_tiles(data, everything, getattr(loaded.model, "size_multiple", 1))
    prep = prep_for_spec(spec, data)
    prep.fit_slides(everything)
    loader = DataLoader(TileData(prep, everything, spec, False), batch_size=batch_size)
    model = loaded.model.to(device)
    return evaluate_segmentation(model, loader, device, spec.classes, _rare(spec.classes),
                                 len(loader)).summary
