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
:class:`~training.tasks.tissue.config.Config`.
"""


from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training.ddp import DistInfo
from training.loop import Trainer
from training.losses import class_weights_from_frequencies, make_loss
from training.precise_bn import recalibrate_batchnorm
from training.runfolder import RunFolder
from training.samplers import RareClassSampler
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
from training.tasks.tissue.config import (
    CLASS_SETS,
    Config,
    check_config,
    oversampling_rates,
    rare_classes,
)
from training.tasks.tissue.crops import SectionCrops
from training.tasks.tissue.data import (
    IGNORE_INDEX,
    TileData,
    TilePrep,
    check_class_map,
    check_tiles,
    fold_lookup,
    same_classes,
    stain_target,
    target_record,
)
from training.tasks.tissue.evaluate import evaluate as evaluate  # the evaluate command
from training.tasks.tissue.evaluate import majority_baseline
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
    rare = rare_classes(tuple(data.class_map[i] for i in sorted(data.class_map)))
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


def _shares(names: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) and return the final validation metrics."""
    main_rank = dist is None or dist.is_main
    log = print if main_rank else (lambda *a, **k: None)
    check_config(config)
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
    names, rare = spec.classes, rare_classes(spec.classes)
    train_set, val_set, counts = _datasets(config, prep, split, spec, model.size_multiple)
    if config.tissue_mask != "off":
        present = dict(enumerate(counts.sum(0).tolist()))
        missing = [names[c] for c, v in present.items() if v == 0]
        if missing:
            raise DataError(f"{data.path}: class(es) {', '.join(missing)} absent from the "
                            "training split once non-tissue pixels are handled")
    rates = oversampling_rates(config, names)
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
