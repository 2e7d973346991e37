"""``python -m training nuclei-tiles``: the LeNet nuclei-tile recipe (docs/training-recipes.md).

A LeNet-5 NUCLEI / NO_NUCLEUS tile classifier trained as the recipe does
("train-model-with-regularization --strategy pseudo_labeling --use-cutout --patience 5
--validation --label-smoothing 0.1"):

1. **Supervised stage** (``cycle-0``): the labelled tiles, split by slide (patient when known)
   into training and validation; cross-entropy with label smoothing 0.1, Adam with weight
   decay 1e-4, gradient clipping, ReduceLROnPlateau, early stopping (patience 5), tile
   augmentation (flips/90°, small affine, colour jitter, cutout).
2. **Pseudo-labelling cycles** (``cycle-1`` ... ``cycle-N``): the best model of the previous
   cycle predicts the unlabelled pool; tiles whose highest probability is above
   ``confidence_threshold`` times the smoothed loss's ceiling (0.95 x 0.95 by default, see
   :func:`.pseudo.effective_threshold`) get their predicted class; the model is retrained on
   labelled + pseudo-labelled tiles (validation stays on labelled tiles only). Pseudo-labels
   are chosen afresh each cycle from the whole pool; each cycle prints how many it adds and
   warns when it adds none.

**Input** (``--data``): a ``nuclei-tiles`` dataset in the export layout
(docs/dataset-format.md; :func:`napari_neuroseg.dataset.convert_nuclei_tiles` makes one), or
the recipe's own layout, a folder of tiles with a ``labels.csv`` (:mod:`.csv_input`), whose
unlabelled tiles join the pool.

**Unlabelled pool** (the recipe's unlabelled tiles; the export layout requires a label on
every ``nuclei-tiles`` item, so they live elsewhere): ``unlabeled: DIR`` in ``--config``, a
folder of images (``.png``, ``.jpg``, ``.tif``...) or a dataset in the export layout of any
task whose labels are ignored; images larger than the tile are cut into tiles. With
``unlabeled_test_items: true`` the dataset's own ``split: "test"`` items join the pool
(transductive: they then no longer make an untouched test set). Without a pool only the
supervised stage runs (said in the output, ``metrics.json`` and ``report.md``).

**Run folder**: ``OUT/cycle-K/`` is each cycle's Trainer run (checkpoints, ``history.json``,
``pseudo_labels.json`` the tiles accepted, ``state/`` for ``--resume`` while the cycle runs,
``cycle.json`` written when it is done, its ``state/`` then deleted: a resumed run loads
finished cycles and continues the unfinished one).
``OUT/checkpoints/best`` is the best checkpoint over all cycles by the monitored validation
value (``selected_cycle`` in ``metrics.json``); ``OUT/checkpoints/last`` the last cycle's last
model. ``OUT/history.json`` concatenates the cycles' epochs (``cycle``, ``cycle_epoch`` and
``pseudo_labels`` per row, with ``lr`` and ``train_accuracy``; ``plots/learning_curves.png``
draws them), ``OUT/metrics.json`` holds the final validation metrics and
``cycles`` (per cycle: pseudo-labels accepted per class, epochs, validation metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training.config import TrainConfig, save_config
from training.ddp import DistInfo
from training.loop import Trainer
from training.losses import make_loss
from training.runfolder import RunFolder
from training.seeding import seed_everything
from training.tasks._common import (
    DataError,
    build_spec,
    check_classes_present,
    init_weights,
    is_synthetic,
    make_loaders,
    optimizer_factory,
    task_split,
    trainer_options,
    write_outputs,
)
from training.tasks.nuclei_tiles.csv_input import csv_unlabelled_pool, open_tile_data
from training.tasks.nuclei_tiles.cycles import (
    CycleResult,
    combined_history,
    cycle_notes,
    finish_run_folder,
    run_cycle,
    select_best,
)
from training.tasks.nuclei_tiles.data import (
    TileData,
    check_tile_shapes,
    labelled_tiles,
    make_augment,
    make_pool,
)
from training.tasks.nuclei_tiles.evaluation import (
    check_classes,
    epoch_metrics,
    item_labels,
    model_device,
    val_metrics,
)
from training.tasks.nuclei_tiles.evaluation import evaluate as evaluate  # the evaluate command
from training.tasks.nuclei_tiles.metrics import (
    TrainAccuracy,
    plot_learning_curves,
    predict_probabilities,
    tile_metrics,
    tile_plots,
)
from training.tasks.nuclei_tiles.pseudo import max_smoothed_probability

NAME = "nuclei-tiles"
DATASET_TASK = "nuclei-tiles"
HELP = "NUCLEI / NO_NUCLEUS tile classifier (the LeNet nuclei-tile recipe: pseudo-labelling)"
DESCRIPTION = (
    "Train nuclei-lenet on the labelled tiles of a nuclei-tiles dataset or of a folder of "
    "tiles with labels.csv (slide-wise validation split, label smoothing, weight decay, "
    "ReduceLROnPlateau, early stopping, tile augmentation with cutout), then pseudo-label an "
    "unlabelled pool (unlabeled: DIR in --config, or the unlabelled tiles of a labels.csv "
    "folder) for pseudo_cycles cycles; writes OUT/cycle-K runs, the best checkpoint, "
    "metrics (accuracy, precision, recall, F1, AUC, confusion matrix), plots and report.md."
)
MODELS = ("nuclei-lenet",)
CYCLE_INITS = ("previous", "scratch")


@dataclass
class Config(TrainConfig):
    """Options of the ``nuclei-tiles`` task (plus those every task shares).

    The recipe (docs/training-recipes.md) states label smoothing 0.1, weight decay 1e-4,
    dropout 0.5, early-stopping patience 5, gradient clipping, ReduceLROnPlateau and cutout;
    it leaves the learning rate, batch size, epochs, scheduler factor/patience, clipping
    norm, confidence threshold and number of cycles unstated: the defaults below are common
    choices for a small CNN (Adam 1e-3, batch 32, scheduler patience 2 < early-stopping
    patience 5 so the rate drops before training stops).

    Attributes
    ----------
    model : str
        ``nuclei-lenet``.
    input_size : int or None
        Tile side the network is built for (and the spec's patch size; the mask stride
        becomes half of it); None keeps the spec's 256. The data's tiles must have this size.
    dropout : float or None
        Dropout after the first fully connected layer; None keeps the spec's 0.5.
    val_fraction : float
        Share of slides (patients when known) held out for validation.
    label_smoothing : float
        Cross-entropy label smoothing (recipe: 0.1).
    optimizer : str
        ``adam``, ``adamw`` or ``sgd``.
    lr_factor, lr_patience, min_lr : float, int, float
        ReduceLROnPlateau on the monitored value.
    augment : bool
        Tile augmentation (recipe: geometric transforms, colour jitter, cutout).
    affine_p, jitter_p, cutout_p : float
        Probabilities of the small affine, the colour jitter and the cutout.
    cutout : bool
        Include cutout (recipe: ``--use-cutout``).
    unlabeled : str or None
        The unlabelled pool: a folder of images or a dataset folder (labels ignored).
    unlabeled_test_items : bool
        Add the dataset's ``split: "test"`` items to the pool (their labels ignored).
    pseudo_cycles : int
        Pseudo-labelling cycles after the supervised stage (0: supervised only).
    confidence_threshold : float
        A pool tile becomes a pseudo-label when its highest probability is above this
        fraction of the highest probability the smoothed loss aims at, ``1 - eps + eps / K``
        (0.95 with ``label_smoothing`` 0.1 over two classes: the default 0.95 compares with
        0.9025); see ``confidence_relative``.
    confidence_relative : bool
        True (default): ``confidence_threshold`` is relative as above; False: it is a raw
        softmax probability (with smoothing 0.1, 0.95 then accepts hardly any tile).
    cycle_epochs : int or None
        Epochs of each pseudo-labelling cycle; None uses ``epochs``.
    cycle_init : str
        ``previous``: each cycle fine-tunes the previous cycle's best model (fresh optimiser
        and scheduler); ``scratch``: each cycle trains a new network.
    """

    model: str = "nuclei-lenet"
    input_size: int | None = None
    dropout: float | None = None
    val_fraction: float = 0.2
    label_smoothing: float = 0.1
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 30
    grad_clip: float | None = 1.0
    early_stopping_patience: int | None = 5
    lr_factor: float = 0.5
    lr_patience: int = 2
    min_lr: float = 1e-6
    monitor: str = "val_loss"
    mode: str = "min"
    augment: bool = True
    affine_p: float = 0.5
    jitter_p: float = 0.8
    cutout_p: float = 0.5
    cutout: bool = True
    unlabeled: str | None = None
    unlabeled_test_items: bool = False
    pseudo_cycles: int = 3
    confidence_threshold: float = 0.95
    confidence_relative: bool = True
    cycle_epochs: int | None = None
    cycle_init: str = "previous"


def _check_config(config: Config) -> None:
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {config.model!r}")
    if config.cycle_init not in CYCLE_INITS:
        raise ValueError(f"cycle_init must be one of {CYCLE_INITS}, not {config.cycle_init!r}")
    if config.epochs < 1 or (config.cycle_epochs is not None and config.cycle_epochs < 1):
        raise ValueError("epochs and cycle_epochs must be at least 1")
    if config.pseudo_cycles < 0:
        raise ValueError(f"pseudo_cycles must be >= 0, not {config.pseudo_cycles}")
    if not 0.0 <= config.confidence_threshold < 1.0:
        raise ValueError("confidence_threshold must be in [0, 1), not "
                         f"{config.confidence_threshold}")
    max_smoothed_probability(config.label_smoothing, 2)  # raises on a bad label_smoothing


def _spec(config: Config, data: Dataset) -> ModelSpec:
    """The declared spec (not a bundled checkpoint's) with the tile size, stride and data.

    ``input_size`` sets the network, the patch size the plugin slides over a slide, the
    mask stride (half the tile) and the description the UI shows.
    """
    base = ModelRegistry(bundled=False).get(config.model)
    changes: dict[str, Any] = {"synthetic": is_synthetic(config, data)}
    if config.input_size is not None:
        size = int(config.input_size)
        stride = max(1, size // 2)
        changes["input"] = replace(base.input, patch_size=(size, size))
        changes["extra"] = {**base.extra, "stride": stride}
        changes["description"] = (
            f"Nuclei present / absent per {size}x{size} H&E window (LeNet-5); windows every "
            f"{stride} px are aggregated into a nuclei mask (the LeNet nuclei-tile recipe).")
    return build_spec(config.model, {"input_size": config.input_size,
                                     "dropout": config.dropout}, data=data, init=config.init,
                      **changes)


def _label_counts(data: Dataset, indices: np.ndarray) -> dict[int, int]:
    found = np.bincount([data.items[int(i)].label for i in indices],
                        minlength=len(data.class_map))
    return {c: int(n) for c, n in enumerate(found)}


def _split(data: Dataset, config: Config) -> Any:
    """Slide-wise split, stratified by slide label (any NUCLEI tile) so that slides of
    NO_NUCLEUS tiles only (background) reach both sides; unstratified when a stratum has a
    single slide."""
    labels = [int(item.label) for item in data.items]
    try:
        return task_split(data, config.val_fraction, config.seed, stratify=labels)
    except DataError:
        raise
    except ValueError:
        return task_split(data, config.val_fraction, config.seed)


def _check_both_classes(data: Dataset, split: Any) -> None:
    """Both classes in the training split (to learn) and the validation split (for recall,
    F1 and AUC to mean anything)."""
    try:
        check_classes_present(data, _label_counts(data, split.train_indices))
        check_classes_present(data, _label_counts(data, split.val_indices), "validation split")
    except DataError as err:
        raise DataError(f"{err}. A tile classifier needs examples of both classes on both "
                        "sides: add NO_NUCLEUS tiles (background, stroma) labelled 0, or fix "
                        "the split with items marked split: train / val") from err


def _new_model(spec: ModelSpec, config: Config, cycle: int) -> torch.nn.Module:
    seed_everything(config.seed + cycle)
    model = ModelRegistry().build(spec)
    init_weights(model, config.init)
    return model


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Supervised stage, then the pseudo-labelling cycles; returns the validation metrics
    of the selected cycle's best model (see the module docstring for the run folder).

    Raises
    ------
    DataError
        Before training: tiles of another size, a class absent from the training or the
        validation split, an unusable unlabelled pool.
    """
    _check_config(config)
    dist = dist or DistInfo()
    data = open_tile_data(config.data, DATASET_TASK)
    spec = _spec(config, data)
    check_classes(data, spec)
    size = int(spec.arch_kwargs["input_size"])
    split = _split(data, config)
    check_tile_shapes(data, size, [*split.train_indices, *split.val_indices])
    _check_both_classes(data, split)
    pool = None if config.pseudo_cycles == 0 else make_pool(
        data, size, config.unlabeled, config.unlabeled_test_items,
        csv_unlabelled_pool(data, size))
    if pool is None and config.pseudo_cycles and dist.is_main:
        print("nuclei-tiles: no unlabelled pool (unlabeled: DIR or unlabeled_test_items in "
              "--config): only the supervised stage runs", flush=True)
    out = Path(config.out) if config.out else None
    if out is not None and dist.is_main:
        save_config(config, RunFolder(out).create())

    names = list(spec.classes)
    train_tiles = labelled_tiles(data, split.train_indices, size)
    labelled = [(train_tiles, i, y) for i, y in enumerate(item_labels(data, split.train_indices))]
    val = TileData.from_source(labelled_tiles(data, split.val_indices, size),
                               item_labels(data, split.val_indices), spec)
    augment = make_augment(config.augment, config.affine_p, config.jitter_p, config.cutout_p,
                           config.cutout)

    def build_trainer(net, entries, cycle, callbacks, run_dir):
        train_loader, val_loader = make_loaders(TileData(entries, spec, augment), val, config,
                                                dist)
        epochs = config.epochs if cycle == 0 or config.cycle_epochs is None \
            else config.cycle_epochs
        options = {**trainer_options(config, dist), "seed": config.seed + cycle,
                   "epochs": epochs, "run_dir": None if run_dir is None else str(run_dir)}
        options["evaluate_init"] = options["evaluate_init"] and cycle == 0  # --init's weights

        def scheduler(optimizer):
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=config.mode, factor=config.lr_factor,
                patience=config.lr_patience, min_lr=config.min_lr)

        loss = make_loss("ce", label_smoothing=config.label_smoothing)
        counter = TrainAccuracy(loss)

        def evaluate_fn(m, loader, device):
            found = epoch_metrics(m, loader, device, names)
            accuracy = counter.take()  # None before the first epoch (the baseline)
            return found if accuracy is None else {**found, "train_accuracy": accuracy}

        return Trainer(net, spec, train_loader, val_loader, loss,
                       optimizer_factory(config, config.optimizer), callbacks=callbacks,
                       evaluate_fn=evaluate_fn, forward=counter, scheduler_factory=scheduler,
                       **options)

    model = _new_model(spec, config, 0)
    n_cycles = 0 if pool is None else config.pseudo_cycles
    results: list[CycleResult] = []
    for cycle in range(n_cycles + 1):
        restart = _new_model(spec, config, cycle) \
            if cycle > 0 and config.cycle_init == "scratch" else None
        result = run_cycle(cycle, model, labelled, pool, spec, config, dist, out,
                           build_trainer,
                           lambda net: val_metrics(net, val, names, config.batch_size),
                           restart=restart)
        model = result.model
        results.append(result)

    best = select_best(results, config.mode)
    model.load_state_dict(best.weights)
    probs, labels = predict_probabilities(
        model, DataLoader(val, batch_size=config.batch_size), model_device(model))
    metrics = tile_metrics(labels, probs, names)
    metrics.update(
        selected_cycle=best.cycle, monitor=config.monitor, cycles=[r.summary for r in results],
        train_tiles=len(labelled), val_tiles=len(val), train_groups=len(split.train_patients),
        val_groups=len(split.val_patients), pool_tiles=0 if pool is None else len(pool),
        pseudo_cycles_run=n_cycles)
    if out is not None and dist.is_main:
        history = combined_history(results)
        plot_history = finish_run_folder(out, results, best, history)
        counts = _label_counts(data, split.train_indices)
        rare = min(counts, key=lambda c: (counts[c], -c))
        plots = [*tile_plots(metrics, labels, probs, rare, RunFolder(out).plots),
                 plot_learning_curves(history, RunFolder(out).plots / "learning_curves.png")]
        notes = [f"Slide-wise split: {len(split.train_patients)} training, "
                 f"{len(split.val_patients)} validation slides/patients.",
                 *cycle_notes(results, pool)]
        write_outputs(config, spec, data, metrics, plot_history, plots=plots, notes=notes,
                      dist=dist)
    return metrics
