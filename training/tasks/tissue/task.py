"""``python -m training tissue``: LGG H&E tissue regions by transfer from the GBM model (the LGG
tissue recipe, docs/training-recipes.md).

Four classes (background, cellular tumour, leading edge, infiltrating tumour) from a dataset
of H&E tiles and masks in the export layout (docs/dataset-format.md), starting from the
8-class GBM model ``gbm-tissue-8`` (``--init``) with a new 8 -> 16 -> 4 mapping head. The LGG
tissue recipe: tissue-aware masks (HSV tissue detection), Macenko stain normalisation, rare-class
oversampling by the rarest class in each tile (infiltrating tumour 20x, leading edge 5x; the
"le-focused" variant: leading edge 3x), progressive unfreezing (head, then the last 10, 25 and 50
layers, then all), stain and geometric augmentation. Reported per epoch and at the end: per-class
Dice, recall and precision, the confusion matrix, mean Dice and the highest probability of the rare
classes (the LGG tissue recipe tracked "LE max probability").

Where the write-up is silent (phase lengths, learning rate, loss) the choices are documented on
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
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel, save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training.config import TrainConfig
from training.ddp import DistInfo
from training.loop import Trainer
from training.losses import class_weights_from_frequencies, make_loss
from training.metrics import ConfusionMatrix
from training.precise_bn import recalibrate_batchnorm
from training.runfolder import RunFolder
from training.samplers import (
    LGG_EXTREME_RATES,
    LGG_IT,
    LGG_LE,
    LGG_LE_FOCUSED_RATES,
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
from training.tasks.tissue.crops import SectionCrops
from training.tasks.tissue.data import (
    IGNORE_INDEX,
    STAIN_FIT_MODES,
    TISSUE_MASK_MODES,
    TileData,
    TilePrep,
    canonical_class_name,
    check_class_map,
    check_tiles,
    fold_lookup,
    prep_for_spec,
    same_classes,
    stain_target,
    target_record,
)
from training.tasks.tissue.metrics import epoch_row, evaluate_segmentation, write_plots
from training.tasks.tissue.model import (
    FrequencyLogger,
    UnfreezeCallback,
    build_model,
    lgg_spec,
    phases,
)

NAME = "tissue"
DATASET_TASK = "tissue"
HELP = "LGG H&E tissue regions by transfer from the 8-class GBM model (the LGG tissue recipe)"
DESCRIPTION = (
    "Fine-tune lgg-tissue (background, cellular tumour, leading edge, infiltrating tumour) "
    "from a gbm-tissue-8 checkpoint (--init) on H&E tiles in the export layout "
    "(docs/dataset-format.md): tissue-aware masks, Macenko stain normalisation, rare-class "
    "oversampling (IT 20x, LE 5x), progressive unfreezing and class-weighted cross-entropy; "
    "writes checkpoints, history (with the effective class frequencies and trainable "
    "parameters of every epoch), metrics (per-class Dice, recall, precision, confusion "
    "matrix), plots and report.md."
)
_LGG_NAMES = {LGG_IT: "infiltrating tumour", LGG_LE: "leading edge"}
#: The LGG tissue recipe's oversampling presets, by class name (so they apply to 4 or 8 classes).
OVERSAMPLING = {key: {_LGG_NAMES[c]: r for c, r in rates.items()}
                for key, rates in (("extreme", LGG_EXTREME_RATES),
                                   ("le-focused", LGG_LE_FOCUSED_RATES), ("none", {}))}
RARE_NAMES = ("leading edge", "infiltrating tumour")
#: ``classes`` option: the registry model trained and the class names it predicts.
CLASS_SETS = {"lgg": "lgg-tissue", "gbm": "gbm-tissue-8"}


@dataclass
class Config(TrainConfig):
    """Options of the ``tissue`` task (plus those every task shares).

    Attributes
    ----------
    classes : str
        ``lgg`` (default): the four LGG classes of ``lgg-tissue`` (background, cellular
        tumour, leading edge, infiltrating tumour); a dataset of the 8 GBM regions is folded
        into them (the four other tumour regions become cellular tumour). ``gbm``: the 8
        GBM regions of ``gbm-tissue-8``, trained without a mapping head.
    first_filters, growth_rate, bottleneck_layers : int or None
        FC-DenseNet size of a fresh network (without ``--init``; a checkpoint keeps its own);
        None: the authors' FC-DenseNet103 (48, 16, 15).
    down_blocks : list of int or None
        Dense layers per down block (FC-DenseNet103: 4, 5, 7, 10, 12).
    val_fraction : float
        Share of patients (slides when tiles have no patient) held out for validation; the
        split is stratified by the rarest class of each patient's tiles when possible.
    val_slides : list of str or None
        Hold out exactly these slides (``slide_id``; IvyGAP: the tissue block, ``W3-B``) and
        train on the others; overrides ``val_fraction``.
    crop_size : int or None
        Train on random square crops of this side (GBM_WSSM: 224) drawn from a grid of
        positions ``crop_stride`` apart and shifted at random by up to half a stride;
        validation then runs on whole sections. None: whole tiles (exported tiles).
    crop_stride : int or None
        Grid step of the crops (default: half the crop).
    downscale : int
        Integer factor by which sections are shrunk before cropping (2: the working
        resolution is twice the dataset's µm/px, and the spec records it).
    oversampling : str
        ``extreme`` (the LGG tissue recipe's final run: IT 20x, LE 5x), ``le-focused`` (LE 3x) or
        ``none``. A tile is repeated at the rate of the rarest class it contains.
    presence_share : float
        A sample counts as holding a class for oversampling when the class covers at least
        this share of its pixels (0: any pixel). Crops of whole sections touch a thin
        leading-edge band almost everywhere; a share keeps the repeats for crops that show it.
    it_oversample, le_oversample : float or None
        Override the preset's rate of infiltrating tumour / leading edge tiles.
    phase_layers : list of int or null
        Progressive unfreezing: layers before the head that train in each phase (``0``: head
        only; ``null``: all). The LGG tissue recipe: head, 10, 25, 50, all. ``[null]`` trains
        everything from the start (the write-up's "fully unfrozen" variant).
    phase_epochs : list of int
        Length of each phase (the last lasts to the end). The write-up gives none: 5 each.
    loss : str
        ``ce``, ``focal``, ``dice``, ``ce+dice`` or ``focal+dice``.
    class_weighting : str
        Weights of ``ce``/``focal`` from the effective (oversampled) pixel frequencies:
        ``median`` (median-frequency balancing), ``inverse``, ``inverse_sqrt`` or ``none``.
        The write-up names no loss; weighting the frequencies *after* oversampling corrects the
        imbalance left over without compounding the two.
    class_weights : list of float or None
        Explicit class weights (override ``class_weighting``).
    focal_gamma, dice_weight : float
        Focal loss focusing parameter; weight of the Dice term in combinations.
    stain_normalization : bool
        Macenko normalisation of every tile (the LGG tissue recipe: on).
    stain_reference : str or None
        Item id of the tile whose stains are the target; None: the first training tile.
    stain_fit : str
        Estimate each tile's source stains per ``slide`` (pooled over its tiles, as the
        plugin does per slide at inference) or per ``tile`` (staintools' way; the slide's
        estimate where a tile has too little tissue).
    tissue_mask : str
        What the HSV tissue mask does to annotated non-tissue pixels: ``relabel`` to
        background (the LGG tissue recipe's tissue-aware masks), ``ignore`` (left out of loss and
        metrics) or ``off``.
    saturation_min, value_max : float
        HSV thresholds of tissue (the LGG tissue recipe: saturation > 15, value < 240).
    mask_kernel : int
        Square kernel of the mask's closing and opening (the LGG tissue recipe: 5).
    augment : bool
        Flips, 90 degree turns, small affine and HED stain jitter on training tiles.
    optimizer : str
        ``adam`` (the write-up's Keras default), ``adamw``, ``sgd`` or ``rmsprop`` (GBM_WSSM's).
    precise_bn : bool
        After the last epoch, recompute the batch norms' running statistics over one pass of
        the training samples (no augmentation, no dropout) and save them in the ``last``
        checkpoint, which the final metrics score (:mod:`training.precise_bn`). On
        ``--resume`` of a finished run this is all that runs.
    """

    classes: str = "lgg"
    first_filters: int | None = None
    growth_rate: int | None = None
    down_blocks: tuple[int, ...] | None = None
    bottleneck_layers: int | None = None
    val_fraction: float = 0.2
    val_slides: tuple[str, ...] | None = None
    crop_size: int | None = None
    crop_stride: int | None = None
    downscale: int = 1
    oversampling: str = "extreme"
    presence_share: float = 0.0
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
    precise_bn: bool = False
    epochs: int = 25
    lr: float = 1e-4
    monitor: str = "mean_dice"
    mode: str = "max"


def _rates(config: Config, names: tuple[str, ...]) -> dict[int, float]:
    """Oversampling rates by class id of ``names`` (the trained classes)."""
    if config.oversampling not in OVERSAMPLING:
        raise ValueError(f"oversampling must be one of {sorted(OVERSAMPLING)}, not "
                         f"{config.oversampling!r}")
    by_name = dict(OVERSAMPLING[config.oversampling])
    for name, rate in (("infiltrating tumour", config.it_oversample),
                       ("leading edge", config.le_oversample)):
        if rate is not None:
            by_name[name] = float(rate)
    canonical = [canonical_class_name(n) for n in names]
    return {canonical.index(n): r for n, r in by_name.items() if n in canonical}


def _class_setup(config: Config, data: Dataset) -> tuple[str, np.ndarray | None]:
    """The registry model to train and the lookup that folds the dataset's classes (or None).

    Raises
    ------
    DataError
        A class map that is neither the model's classes nor (for ``lgg``) the 8 GBM regions.
    """
    if config.classes not in CLASS_SETS:
        raise ValueError(f"classes must be one of {', '.join(CLASS_SETS)}, not "
                         f"{config.classes!r}")
    name = CLASS_SETS[config.classes]
    declared = ModelRegistry(bundled=False)
    wanted, gbm = declared.get(name).classes, declared.get(CLASS_SETS["gbm"]).classes
    if config.classes == "lgg" and not same_classes(data.class_map, wanted) \
            and same_classes(data.class_map, gbm):
        return name, fold_lookup(gbm, wanted, rest="cellular tumour")
    check_class_map(data.class_map, wanted, str(data.path))
    return name, None


def _rarest_rank(counts: dict[int, int], rare: list[int]) -> int:
    """2 for tiles with infiltrating tumour, 1 with leading edge, else 0 (split strata)."""
    le, it = rare if len(rare) == 2 else (None, None)
    return 2 if counts.get(it, 0) else 1 if counts.get(le, 0) else 0


def _slide_split(data: Dataset, slides: tuple[str, ...]) -> PatientSplit:
    """Hold out the items of ``slides`` (``slide_id``), train on the others."""
    held = set(slides)
    unknown = held - {item.slide_id for item in data.items}
    if unknown:
        raise DataError(f"{data.path}: val_slides {sorted(unknown)} are not slide ids of the "
                        f"dataset (they are: {sorted({str(i.slide_id) for i in data.items})})")
    val = [i for i, item in enumerate(data.items) if item.slide_id in held]
    train = [i for i, item in enumerate(data.items)
             if item.slide_id not in held and item.split != "test"]
    order = list(dict.fromkeys(str(item.slide_id) for item in data.items))
    return PatientSplit(np.asarray(train, np.int64), np.asarray(val, np.int64),
                        tuple(s for s in order if s not in held),
                        tuple(s for s in order if s in held))


def _split(data: Dataset, config: Config, raw: dict[str, dict[int, int]]) -> PatientSplit:
    if config.val_slides:
        return _slide_split(data, tuple(config.val_slides))
    rare = _rare(tuple(data.class_map[i] for i in sorted(data.class_map)))
    strata = [_rarest_rank(raw[item.id], rare) for item in data.items]
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
               "optimizer": ("adam", "adamw", "sgd", "rmsprop"), "classes": tuple(CLASS_SETS)}
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, not "
                             f"{getattr(config, key)!r}")
    make_loss(config.loss)
    if config.downscale < 1 or (config.crop_size is not None and config.crop_size < 1):
        raise ValueError(f"downscale ({config.downscale}) and crop_size ({config.crop_size}) "
                         "must be positive")


def _prepare(config: Config, data: Dataset, split: PatientSplit, base: ModelSpec,
             fold: np.ndarray | None, log: Callable[..., None]
             ) -> tuple[ModelSpec, nn.Module, TilePrep]:
    """Stain target, spec, model and fitted tile preparation."""
    train_idx, val_idx = split.train_indices, split.val_indices
    hsv = {"saturation_min": config.saturation_min, "value_max": config.value_max,
           "kernel": config.mask_kernel}
    target = stain_target(data, config.stain_reference, int(train_idx[0]), hsv) \
        if config.stain_normalization else None
    extra: dict[str, Any] = {"tissue_mask_mode": config.tissue_mask, "tissue_mask_hsv": hsv,
                             "stain_fit": config.stain_fit}
    if target is not None:
        extra["macenko_target"] = target_record(target)
    if fold is not None:
        extra["classes_folded_from"] = [data.class_map[i] for i in sorted(data.class_map)]
        extra["training_note"] = ("LGG classes learnt from GBM region maps (no labelled LGG "
                                  "data): other GBM regions counted as cellular tumour")
    spec = lgg_spec(base, data, extra=extra, stain_normalization=target is not None,
                    folded=fold is not None, downscale=config.downscale)
    model, spec = build_model(spec, config.init, log=log)
    everything = np.concatenate([train_idx, val_idx])
    check_tiles(data, everything, 1 if config.crop_size else model.size_multiple)
    prep = TilePrep(data, config.tissue_mask, hsv, target, config.stain_fit, fold=fold)
    failed = prep.fit_slides(everything)
    if failed:
        log(f"warning: stains of {len(failed)} slide(s) could not be estimated (too little "
            f"tissue); their tiles are not normalised: {', '.join(failed[:5])}")
    return spec, model, prep


def _datasets(config: Config, prep: TilePrep, split: PatientSplit, spec: ModelSpec,
              size_multiple: int) -> tuple[TorchDataset, TorchDataset, np.ndarray]:
    """Training and validation sets and the training samples' class pixel counts."""
    n = len(spec.classes)
    if not config.crop_size and config.downscale == 1:
        counts = prep.class_counts(split.train_indices, n)
        return (TileData(prep, split.train_indices, spec, config.augment),
                TileData(prep, split.val_indices, spec, False), counts)
    train = SectionCrops(prep, split.train_indices, spec, factor=config.downscale,
                         crop=config.crop_size, stride=config.crop_stride,
                         augment=config.augment, size_multiple=size_multiple)
    val = SectionCrops(prep, split.val_indices, spec, factor=config.downscale,
                       size_multiple=size_multiple)
    return train, val, train.class_counts(n)


def _precise_bn(config: Config, trainer: Trainer, train_set: TorchDataset, spec: ModelSpec,
                history: dict[str, Any], log: Callable[..., None]) -> None:
    """Recalibrate the batch norms on the un-augmented training samples; save as ``last``."""
    augment, train_set.augment = train_set.augment, None
    try:
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=False)
        used = recalibrate_batchnorm(trainer.model, loader, trainer.device)
    finally:
        train_set.augment = augment
    log(f"precise batch norm: running statistics recomputed over {used} batches of "
        "training samples")
    if config.out and trainer.dist.is_main:
        save_checkpoint(RunFolder(Path(config.out)).last, trainer.model, spec,
                        history=history, metrics={"precise_bn_batches": used})


def majority_baseline(val: TorchDataset, counts: np.ndarray, names: tuple[str, ...]
                      ) -> dict[str, Any]:
    """Scores of the map that gives every pixel the training split's most frequent class.

    Returns
    -------
    dict
        :meth:`ConfusionMatrix.summary` plus ``class`` (the majority class's name).
    """
    majority = int(counts.sum(0).argmax())
    matrix = ConfusionMatrix(len(names), ignore_index=IGNORE_INDEX)
    for i in range(len(val)):
        truth = val[i][1].numpy().ravel()
        matrix.update(truth, np.full_like(truth, majority))
    return {**matrix.summary(names), "class": names[majority]}


def _shares(names: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) and return the final validation metrics."""
    main_rank = dist is None or dist.is_main
    log = print if main_rank else (lambda *a, **k: None)
    _check_config(config)
    schedule = phases(config.phase_layers, config.phase_epochs)
    data = open_task_dataset(config.data, DATASET_TASK)
    name, fold = _class_setup(config, data)
    base = build_spec(name, {"first_filters": config.first_filters,
                             "growth_rate": config.growth_rate,
                             "down_blocks": list(config.down_blocks) if config.down_blocks
                             else None,
                             "bottleneck_layers": config.bottleneck_layers},
                      synthetic=is_synthetic(config, data), data=data)
    raw = data.class_pixel_counts()
    split = _split(data, config, raw)
    train_idx, val_idx = split.train_indices, split.val_indices
    check_classes_present(data, {c: sum(raw[data.items[i].id][c] for i in train_idx)
                                 for c in data.class_map})
    spec, model, prep = _prepare(config, data, split, base, fold, log)
    names, rare = spec.classes, _rare(spec.classes)
    train_set, val_set, counts = _datasets(config, prep, split, spec, model.size_multiple)
    if config.tissue_mask != "off":
        present = dict(enumerate(counts.sum(0).tolist()))
        missing = [names[c] for c, v in present.items() if v == 0]
        if missing:
            raise DataError(f"{data.path}: class(es) {', '.join(missing)} absent from the "
                            "training split once non-tissue pixels are handled")
    rates = _rates(config, names)
    presence = [frozenset(np.flatnonzero(row >= max(config.presence_share * row.sum(), 1))
                          .tolist()) for row in counts]
    sampler = RareClassSampler(presence, rates, seed=config.seed,
                               num_replicas=dist.world_size if dist else 1,
                               rank=dist.rank if dist else 0) if rates else None
    expected = sampler.expected_frequencies(counts) if sampler else counts.sum(0) / counts.sum()
    weights = _class_weights(config, expected)
    train, val = make_loaders(train_set, val_set, config, dist, sampler=sampler,
                              val_batch_size=1 if config.crop_size else None)
    log(f"{len(train_set)} training samples ({len(sampler) if sampler else len(train_set)} "
        f"draws per epoch), {len(val_set)} validation samples")

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
    if config.precise_bn:
        _precise_bn(config, trainer, train_set, spec, history, log)
    final = evaluate_segmentation(trainer.model, val, trainer.device, names, rare, len(val),
                                  config.seed)
    baseline = majority_baseline(val_set, counts, names)
    metrics = {**final.summary,
               "majority_baseline": {k: baseline[k] for k in
                                     ("class", "dice", "recall", "mean_dice", "accuracy")},
               "class_frequencies": {"dataset": _shares(names, counts.sum(0) / counts.sum()),
                                     "expected_oversampled": _shares(names, expected)},
               "class_weights": weights,
               "oversampling_rates": {names[c]: r for c, r in rates.items()},
               "trainable_parameters": history.get("trainable_parameters", []),
               "train_tiles": int(train_idx.size), "val_tiles": int(val_idx.size),
               "train_patients": len(split.train_patients),
               "val_patients": len(split.val_patients),
               "val_groups": [str(g) for g in split.val_patients]}
    plots = write_plots(final, rare, RunFolder(Path(config.out)).plots) \
        if config.out and main_rank else []
    unit = "slides" if config.val_slides else "patients"
    notes = [f"Split by {unit}: {len(split.train_patients)} training, "
             f"{len(split.val_patients)} validation {unit} "
             f"({train_idx.size} / {val_idx.size} items; held out: "
             f"{', '.join(map(str, split.val_patients))}).",
             "Final metrics: the last epoch's model"
             f"{' (batch norms recomputed on the training samples)' if config.precise_bn else ''}"
             " on the validation items; "
             f"{'GBM transfer from ' + config.init if config.init else 'no GBM weights'}.",
             f"Majority baseline ({baseline['class']} everywhere): mean Dice "
             f"{baseline['mean_dice']:.3f}, pixel accuracy {baseline['accuracy']:.3f}."]
    if fold is not None:
        notes.append("Classes folded from the dataset's 8 GBM regions: perinecrotic zone, "
                     "pseudopalisading cells, microvascular proliferation and necrosis count "
                     "as cellular tumour.")
    write_outputs(config, spec, data, metrics, history, plots=plots, notes=notes, dist=dist)
    return metrics


def _working_factor(spec: ModelSpec, data: Dataset) -> int:
    """How many times coarser the checkpoint works than the dataset's items (1 if unknown)."""
    mpps = [float(item.region["mpp"]) for item in data.items
            if isinstance(item.region, dict) and item.region.get("mpp")]
    if not mpps or not spec.input.resolution:
        return 1
    return max(1, round(float(spec.input.resolution) / float(np.median(mpps))))


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Per-class Dice, recall, precision, confusion matrix and rare-class maxima on ``data``.

    The tiles get the stain normalisation and tissue-mask handling the checkpoint recorded.
    A dataset of the 8 GBM regions is folded into the classes of a checkpoint trained on them
    folded (``extra["classes_folded_from"]``); items finer than the checkpoint's working
    resolution are shrunk to it and scored whole.

    Raises
    ------
    DataError
        The dataset's class map differs from the checkpoint's classes, or bad tiles.
    """
    spec = loaded.spec
    folded_from = (spec.extra or {}).get("classes_folded_from")
    fold = None
    if folded_from and same_classes(data.class_map, folded_from) \
            and not same_classes(data.class_map, spec.classes):
        fold = fold_lookup(folded_from, spec.classes, rest="cellular tumour")
    elif not same_classes(data.class_map, spec.classes):
        raise DataError(f"{data.path}: class map {data.class_map} does not agree with the "
                        f"classes of checkpoint {loaded.path} {list(spec.classes)}")
    everything = np.arange(len(data.items))
    multiple = getattr(loaded.model, "size_multiple", 1)
    factor = _working_factor(spec, data)
    check_tiles(data, everything, multiple if factor == 1 else 1)
    prep = prep_for_spec(spec, data)
    prep.fold = fold
    prep.fit_slides(everything)
    if factor == 1:
        samples: TorchDataset = TileData(prep, everything, spec, False)
    else:
        samples, batch_size = SectionCrops(prep, everything, spec, factor=factor,
                                           size_multiple=multiple), 1
    loader = DataLoader(samples, batch_size=batch_size)
    model = loaded.model.to(device)
    return evaluate_segmentation(model, loader, device, spec.classes, _rare(spec.classes),
                                 len(loader)).summary
