"""``python -m training ct``: brain-metastasis detection on head CT, decided per patient.

``ct-metastasis`` (:class:`napari_neuroseg.models.resnet.ResNet50Slice`) classifies slices; a
patient's score is the maximum of its slice probabilities. The CT metastasis recipe
(docs/training-recipes.md):

- slices prepared by the plugin's own :func:`napari_neuroseg.preprocess.ct_input.ct_model_input`
  in the recipe's order (brain extraction, window 40/80, z-score, square padding, resize;
  ``preprocessing: legacy`` for the earlier HU path), the steps recorded in the checkpoints'
  ``spec.input.preprocessing``; slices with too little brain dropped (``min_brain_fraction``);
- a patient-wise 80/20 split stratified by patient label; batches of whole patients
  (:class:`training.split.PatientBatchSampler`); slice logits max-pooled per patient and the
  BCE counted once per patient (:func:`training.losses.patient_bce_loss`);
- the 3-stage curriculum (:class:`training.schedules.Curriculum`): head at 5e-5 for epochs
  0-4, + layer4 at 1e-5 from epoch 5, + layer3 at 5e-6 from epoch 12; gradient norm clipped
  at 1.0; a pretrained backbone from a local file (``--backbone PATH``,
  :mod:`.backbone`);
- class-conditional augmentation (mild for metastasis patients, strong for the others);
- per epoch: patient-level AUC, the F1-maximising threshold with its F1, sensitivity and
  specificity, the same at 0.5, slice-level AUC. The best checkpoint is the best patient F1
  and every checkpoint stores its epoch's threshold in ``spec.threshold`` (the plugin's
  decision threshold); milestone checkpoints every ``milestone_every`` epochs and at the end
  carry the epoch, stage and F1 in their names (:mod:`.milestones`).

Where the recipe is silent: the optimiser is Adam; the threshold is searched on a 0.05 grid
(the recipe reports 0.10). The brain-extraction HU range is the plugin's fixed -50..100.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel, checkpoint_paths, load_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.ct_input import (
    CT_RECIPE_NORMALIZATION,
    CT_RECIPE_STEPS,
    ct_window_of,
)
from training.augment import ClassConditionalAugment, ct_negative_augment, ct_positive_augment
from training.config import TrainConfig
from training.ddp import DistInfo
from training.loop import Trainer
from training.losses import patient_bce_loss
from training.runfolder import RunFolder
from training.split import batch_patient_index
from training.tasks._common import (
    DataError,
    build_spec,
    check_classes_present,
    init_weights,
    is_synthetic,
    open_task_dataset,
    task_split,
    trainer_options,
    write_outputs,
)
from training.tasks.ct.backbone import load_pretrained_backbone
from training.tasks.ct.curriculum import CurriculumSwitch, build_curriculum
from training.tasks.ct.data import (
    CTSlices,
    patient_label_of_items,
    patient_loader,
    prepare_slices,
)
from training.tasks.ct.metrics import ct_plots, patient_scores, scores_metrics, slice_probabilities
from training.tasks.ct.milestones import MILESTONE_FOLDER, MilestoneCheckpoints

NAME = "ct"
DATASET_TASK = "ct"
HELP = "brain-metastasis detection on head CT, patient-level (the CT metastasis recipe)"
DESCRIPTION = (
    "Train ct-metastasis on a ct dataset (docs/dataset-format.md; convert_ct_labels turns "
    "labels1.csv + DICOM folders into one): brain extraction, window 40/80, z-score, square "
    "padding and resize (the plugin's preprocessing, recorded in the checkpoint), quality "
    "filter, batches of whole patients, max pooling of slice logits, patient BCE, the 3-stage "
    "curriculum and class-conditional augmentation; writes checkpoints whose threshold is "
    "the F1-maximising one, patient-level AUC/F1/sensitivity/specificity, plots, report.md."
)
SPEC = "ct-metastasis"
PREPROCESSING = ("recipe", "legacy")
#: Flags of this sub-command besides those every task takes (the CLI adds them).
OPTIONS = {"--backbone": "local torchvision-layout ResNet-50 weights (e.g. RadImageNet) for "
           "the backbone, .safetensors or a tensors-only .pth/.bin (docs/training-recipes.md)"}


@dataclass
class Config(TrainConfig):
    """Options of the ``ct`` task (plus those every task shares); the recipe's defaults.

    Attributes
    ----------
    image_size : int
        Edge of the network input (recipe: 256).
    hidden, dropout : int or None, float or None
        Override the head's hidden width (512) and dropout (0.4); None keeps the registry's.
    backbone : str or None
        A local torchvision-layout ResNet-50 weights file for the backbone (the recipe:
        RadImageNet ResNet-50, which users download themselves; ``.safetensors`` or a
        tensors-only ``.pth``/``.bin``; ``--backbone PATH``; see :mod:`.backbone`); None
        starts from random weights.
    pretrained : str or None
        The earlier name of ``backbone`` (still read; giving both is refused).
    preprocessing : str
        ``recipe``: brain extraction, window, z-score, square padding, resize (the recipe's
        order); ``legacy``: the earlier brain-extracted HU, resized without padding and
        windowed by the runner. Recorded in the checkpoints; the plugin follows it.
    milestone_every : int or None
        Also keep the checkpoint of every N-th epoch and of the last one as
        ``checkpoints/milestones/epoch{E}_stage{S}_f1_{F}`` (None or 0: the last one only).
    min_brain_fraction : float
        Slices whose brain covers less of the image are dropped (a patient with none left
        keeps all its slices).
    val_fraction : float
        Share of patients held out, per label (recipe: 80/20).
    patients_per_batch : int
        Whole patients per training batch (recipe: 32 slices per batch, about one of its
        30-50-slice patients).
    max_slices_per_patient : int or None
        Random subset of a patient's slices per epoch (memory); None keeps all, so max
        pooling always sees the lesion slices.
    batch_size : int
        Not used for training (batches are whole patients).
    stage_starts : tuple of int
        First epoch of each curriculum stage: head; + layer4; + layer3 (recipe: 0, 5, 12).
        Fewer values give fewer stages.
    lr, lr_layer4, lr_layer3 : float
        Learning rates of the head, layer4 and layer3 (recipe: 5e-5, 1e-5, 5e-6).
    optimizer : str
        ``adam`` or ``adamw`` (the recipe does not say; Adam), with ``weight_decay``.
    grad_clip : float or None
        Gradient norm clipping (recipe: 1.0).
    pos_weight : float or None
        Weight of positive patients in the BCE.
    label_smoothing : float
        Patient-label smoothing in the BCE.
    augment : bool
        Class-conditional augmentation of training slices.
    positive_p, positive_gamma, positive_blur_p : float, (float, float), float
        Metastasis patients' slices: probability, gamma range, blur probability (recipe: 0.7,
        0.95-1.05, gentle blur).
    negative_p, negative_gamma, negative_clahe_p, negative_sharpen_p : float, ...
        Other slices: probability, gamma range, CLAHE and 2x sharpening probabilities
        (recipe: 0.5, 0.9-1.1, CLAHE and sharpening on).
    threshold_step : float or None
        Grid step of the F1-maximising threshold search; None tries every patient score.
    epochs, monitor, mode : int, str, str
        Recipe: 50 epochs; the best checkpoint has the highest validation ``patient_f1`` (at
        the searched threshold; the recipe names its checkpoints by F1).
    """

    image_size: int = 256
    hidden: int | None = None
    dropout: float | None = None
    backbone: str | None = None
    pretrained: str | None = None
    preprocessing: str = "recipe"
    milestone_every: int | None = 5
    min_brain_fraction: float = 0.05
    val_fraction: float = 0.2
    patients_per_batch: int = 1
    max_slices_per_patient: int | None = None
    batch_size: int = 32
    stage_starts: tuple[int, ...] = (0, 5, 12)
    lr: float = 5e-5
    lr_layer4: float = 1e-5
    lr_layer3: float = 5e-6
    optimizer: str = "adam"
    grad_clip: float | None = 1.0
    pos_weight: float | None = None
    label_smoothing: float = 0.0
    augment: bool = True
    positive_p: float = 0.7
    positive_gamma: tuple[float, ...] = (0.95, 1.05)
    positive_blur_p: float = 0.5
    negative_p: float = 0.5
    negative_gamma: tuple[float, ...] = (0.9, 1.1)
    negative_clahe_p: float = 0.5
    negative_sharpen_p: float = 0.5
    threshold_step: float | None = 0.05
    epochs: int = 50
    monitor: str = "patient_f1"
    mode: str = "max"


def _spec(config: Config, data: Dataset) -> ModelSpec:
    if config.image_size < 32:
        raise ValueError(f"image_size must be at least 32 (ResNet-50 strides), got "
                         f"{config.image_size}")
    spec = build_spec(SPEC, {"hidden": config.hidden, "dropout": config.dropout},
                      synthetic=is_synthetic(config, data), data=data, init=config.init)
    size = (config.image_size, config.image_size)
    extra = {**spec.extra, "resize_to": list(size),
             "min_brain_fraction": config.min_brain_fraction,
             "threshold_step": config.threshold_step,
             "threshold_source": "patient-level F1 search on the validation split"}
    description = ("Brain-metastasis probability per head-CT slice (ResNet-50, one logit); a "
                   "patient is the maximum over its slices, positive at or above the "
                   "threshold that maximised patient-level F1 on the validation patients. "
                   f"Trained with `python -m training ct` on {data.path.name}.")
    inputs = replace(spec.input, patch_size=size)
    if config.preprocessing == "recipe":
        center, width = ct_window_of(spec)
        extra["ct_window"] = {"center": center, "width": width}
        inputs = replace(inputs, preprocessing=CT_RECIPE_STEPS,
                         normalization=dict(CT_RECIPE_NORMALIZATION))
    return replace(spec, input=inputs, extra=extra, description=description)


def _check_config(config: Config) -> str | None:
    """Refuse unknown choices; return the backbone file (``backbone`` or ``pretrained``)."""
    if config.preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, not "
                         f"{config.preprocessing!r}")
    if config.milestone_every is not None and config.milestone_every < 0:
        raise ValueError(f"milestone_every must be >= 0, not {config.milestone_every}")
    if config.backbone and config.pretrained and config.backbone != config.pretrained:
        raise ValueError("give the backbone file once: backbone (or --backbone), not also "
                         "pretrained")
    return config.backbone or config.pretrained


def _check(data: Dataset) -> None:
    if sorted(data.class_map) != [0, 1]:
        raise DataError(f"{data.path}: the ct task is binary; the class map must be "
                        f"{{0: no metastasis, 1: metastasis}}, not {data.class_map}")
    missing = [item.id for item in data.items if item.patient_id is None]
    if missing:
        raise DataError(f"{data.path}: items without a patient id (needed for patient-level "
                        f"pooling and the patient-wise split): {', '.join(missing[:5])}")


def _check_split(data: Dataset, indices: dict[str, np.ndarray], labels: list[int]) -> None:
    for side, rows in indices.items():
        patients = {data.items[int(i)].patient_id: labels[int(i)] for i in rows}
        counts = {c: sum(1 for v in patients.values() if v == c) for c in (0, 1)}
        check_classes_present(data, counts, f"{side} split's patients")


def _augment(config: Config) -> ClassConditionalAugment | None:
    if not config.augment:
        return None
    for name in ("positive_gamma", "negative_gamma"):
        if len(getattr(config, name)) != 2:
            raise ValueError(f"{name} must be [low, high], got {getattr(config, name)}")
    return ClassConditionalAugment(
        positive=ct_positive_augment(config.positive_p, tuple(config.positive_gamma),
                                     config.positive_blur_p),
        negative=ct_negative_augment(config.negative_p, tuple(config.negative_gamma),
                                     clahe_p=config.negative_clahe_p,
                                     sharpen_p=config.negative_sharpen_p))


def _printer(enabled: bool, what: str):
    def report(done: int, total: int) -> None:
        if enabled and (done == total or done % max(total // 4, 1) == 0):
            print(f"preparing {what} slices: {done}/{total}", flush=True)
    return report


def _history_values(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch values (all in [0, 1]; counts and the nested search are left out)."""
    return {k: v for k, v in metrics.items()
            if k not in ("search", "tp", "fp", "tn", "fn")}


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) and return the best checkpoint's validation metrics."""
    main = dist is None or dist.is_main
    backbone = _check_config(config)
    data = open_task_dataset(config.data, DATASET_TASK)
    _check(data)
    spec = _spec(config, data)
    labels = patient_label_of_items(data)
    patients = [item.patient_id for item in data.items]
    split = task_split(data, config.val_fraction, config.seed, stratify=labels)
    _check_split(data, {"training": split.train_indices, "validation": split.val_indices},
                 labels)
    model = ModelRegistry().build(spec)
    notes = []
    if backbone:
        notes.append(load_pretrained_backbone(model, backbone))
    else:
        notes.append("Backbone not pretrained (the recipe starts from RadImageNet weights, "
                     "--backbone PATH): the head-only stage trains on random features.")
    init_weights(model, config.init)
    switch = CurriculumSwitch(build_curriculum(
        model, config.stage_starts, (config.lr, config.lr_layer4, config.lr_layer3),
        config.optimizer, config.weight_decay), verbose=main)
    augment = _augment(config)

    train_prep = prepare_slices(data, split.train_indices, spec, config.min_brain_fraction,
                                _printer(main, "training"))
    val_prep = prepare_slices(data, split.val_indices, spec, config.min_brain_fraction,
                              _printer(main, "validation"))
    ranks = (dist.world_size, dist.rank) if dist is not None and dist.distributed else (1, 0)
    common = {"patients_per_batch": config.patients_per_batch, "seed": config.seed,
              "num_workers": config.num_workers}
    train = patient_loader(CTSlices(train_prep, labels, spec, augment), patients,
                           max_slices=config.max_slices_per_patient, shuffle=True,
                           num_replicas=ranks[0], rank=ranks[1], **common)
    val = patient_loader(CTSlices(val_prep, labels, spec), patients, max_slices=None,
                         shuffle=False, **common)
    label_of = dict(zip(patients, labels, strict=True))
    holder: dict[str, Trainer] = {}

    def forward(net, batch, device):
        x, _, index = batch
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        slice_index, order = batch_patient_index([patients[int(i)] for i in index], device)
        target = torch.tensor([label_of[p] for p in order], dtype=torch.float32, device=device)
        loss = patient_bce_loss(net(x).float(), slice_index, target, config.pos_weight,
                                config.label_smoothing)
        return loss, len(order)

    def evaluate_fn(net, loader, device):
        probs, items = slice_probabilities(net, loader, device)
        metrics = scores_metrics(patient_scores(probs, items, patients, labels), None,
                                 config.threshold_step)
        # Runs between validation and the epoch's checkpoints: they store this threshold.
        trainer = holder["trainer"]
        trainer.spec = replace(trainer.spec, threshold=metrics["threshold"])
        return _history_values(metrics)

    # The loss lives in ``forward`` (patient pooling); the trainer's loss_fn is not used.
    folder = RunFolder(Path(config.out)).checkpoints / MILESTONE_FOLDER if config.out else None
    milestones = MilestoneCheckpoints(folder, config.milestone_every, config.stage_starts,
                                      enabled=main)
    trainer = Trainer(model, spec, train, val, patient_bce_loss, switch.optimizer,
                      callbacks=[switch, milestones], evaluate_fn=evaluate_fn, forward=forward,
                      **trainer_options(config, dist))
    holder["trainer"] = trainer
    history = trainer.fit(resume=config.resume)
    milestones.finish(trainer)

    final, evaluated = trainer.model, "the last epoch's model"
    threshold = trainer.spec.threshold
    best = RunFolder(Path(config.out)).best if config.out else None
    if main and best is not None and checkpoint_paths(best)[0].exists():
        loaded = load_checkpoint(best, device=trainer.device)
        final, threshold = loaded.model, loaded.spec.threshold
        evaluated = f"the best checkpoint (epoch {trainer.best_epoch})"
    probs, items = slice_probabilities(final, val, trainer.device)
    scores = patient_scores(probs, items, patients, labels)
    metrics = scores_metrics(scores, threshold, config.threshold_step)
    metrics.update(best_epoch=trainer.best_epoch, train_patients=len(split.train_patients),
                   val_patients=len(split.val_patients),
                   train_slices=int(train_prep.usable.sum()),
                   val_slices=int(val_prep.usable.sum()),
                   dropped_slices=int((~train_prep.usable).sum() + (~val_prep.usable).sum()))
    plots = []
    if config.out and main:
        plots = ct_plots(scores, threshold, spec.classes, RunFolder(Path(config.out)).plots)
    notes += [f"Final metrics: {evaluated} on the validation patients, at its threshold "
              f"{threshold:g}.",
              f"Patient-wise split: {len(split.train_patients)} training, "
              f"{len(split.val_patients)} validation patients; "
              f"{metrics['dropped_slices']} slices dropped by the quality filter."]
    write_outputs(config, spec, data, metrics, history, plots=plots, notes=notes, dist=dist)
    return metrics


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """Patient-level metrics of a checkpoint on ``data``, through the plugin's runner.

    Slices are prepared and filtered as in training (``spec.extra['min_brain_fraction']``)
    and classified by :class:`~napari_neuroseg.models.runner.ModelRunner`; F1, sensitivity,
    specificity and the confusion counts are at the checkpoint's ``spec.threshold``, with
    the patient AUC, slice AUC and the F1-maximising threshold (``search``).
    """
    spec = loaded.spec
    if spec.task != "slice_classification":
        raise DataError(f"{spec.name} is a {spec.task} model, not a CT slice classifier")
    prepared = prepare_slices(data, np.arange(len(data.items)), spec,
                              float(spec.extra.get("min_brain_fraction", 0.05)))
    runner = ModelRunner(loaded.model, spec, device=device, batch_size=batch_size)
    rows = np.flatnonzero(prepared.usable)
    chunk = max(batch_size, 1) * 4
    probs = np.concatenate([np.zeros(0, np.float32)] + [
        runner(prepared.images[rows[s : s + chunk]].astype(np.float32)[:, None])[:, 0]
        for s in range(0, rows.size, chunk)])
    ids = [item.patient_id or item.id for item in data.items]
    scores = patient_scores(probs, prepared.items[rows].tolist(), ids,
                            patient_label_of_items(data))
    metrics = scores_metrics(scores, spec.threshold, spec.extra.get("threshold_step", 0.05))
    metrics.update(patients=len(scores.patients), slices_used=int(rows.size),
                   slices_dropped=int(len(prepared) - rows.size))
    return metrics
