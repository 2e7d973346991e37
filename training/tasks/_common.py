"""What every task recipe shares: dataset checks, splits, model set-up, loaders, run outputs.

A task module (``training/tasks/<task>/task.py``) defines ``NAME``, ``HELP``, ``DESCRIPTION``,
``DATASET_TASK``, ``Config`` (a :class:`training.config.TrainConfig` subclass), ``run(config,
dist) -> dict`` and ``evaluate(loaded, data, device, batch_size) -> dict``; :mod:`training.cli`
turns each into a sub-command and ``evaluate`` dispatches on the dataset's task.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel, load_checkpoint, read_spec
from napari_neuroseg.models.data_licences import licence_of_sources, licence_record
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training import events
from training.config import TrainConfig, effective_config
from training.ddp import DistInfo, distributed_loader
from training.report import plot_history, write_report
from training.runfolder import RunFolder, atomic_write_json
from training.seeding import seed_worker
from training.split import PatientSplit, patient_split

__all__ = [
    "DataError",
    "build_spec",
    "check_classes_present",
    "class_counts",
    "group_ids",
    "init_weights",
    "is_synthetic",
    "make_loaders",
    "open_task_dataset",
    "optimizer_factory",
    "task_split",
    "trainer_options",
    "training_data_extra",
    "training_data_name",
    "write_outputs",
]


class DataError(ValueError):
    """A dataset that a task cannot train on; raised before any training starts."""


def open_task_dataset(path: str | None, task: str) -> Dataset:
    """Open and validate the dataset at ``path`` and check that it is a ``task`` dataset.

    Raises
    ------
    DataError
        No ``--data`` given, or the dataset belongs to another task. Format problems (missing
        files, mask/image mismatch, unknown classes) raise
        :class:`napari_neuroseg.dataset.DatasetError` from :meth:`Dataset.open`.
    """
    if not path:
        raise DataError(f"the {task!r} task needs --data DIR (a dataset in the export layout)")
    data = Dataset.open(path)
    if data.task != task:
        raise DataError(f"{data.path}: a dataset of task {data.task!r}, not {task!r}")
    if not data.items:
        raise DataError(f"{data.path}: the dataset has no items")
    return data


def group_ids(data: Dataset) -> list[Hashable]:
    """The unit a split keeps together for each item: patient, else slide, else the item."""
    return [item.patient_id or item.slide_id or item.id for item in data.items]


def task_split(data: Dataset, val_fraction: float, seed: int,
               stratify: Sequence[int] | None = None) -> PatientSplit:
    """Patient-wise train/validation split that honours the items' fixed ``split`` values.

    Items marked ``"train"`` or ``"val"`` (``"test"`` items are left out) keep their side;
    the others are split by patient (or slide) with :func:`training.split.patient_split`.
    No patient ends up on both sides, except when the free items all belong to one patient
    and nothing is fixed in ``val`` (an export of one patient): then they are split item by
    item, with a warning (:func:`training.events.warn`).

    Raises
    ------
    DataError
        A patient has items fixed on both sides, or no validation item can be found (fewer
        than two patients and fewer than two free items).
    """
    groups = group_ids(data)
    fixed = {"train": set(), "val": set()}
    for item, group in zip(data.items, groups, strict=True):
        if item.split in fixed:
            fixed[item.split].add(group)
    both = fixed["train"] & fixed["val"]
    if both:
        raise DataError(f"{data.path}: patients with items fixed in both train and val: "
                        f"{', '.join(map(str, sorted(both, key=str)[:5]))}")
    free = [i for i, item in enumerate(data.items) if item.split is None
            and groups[i] not in fixed["train"] | fixed["val"]]
    train_groups, val_groups = set(fixed["train"]), set(fixed["val"])
    if free:
        free_groups = [groups[i] for i in free]
        if len(set(free_groups)) >= 2 and (not val_groups or val_fraction > 0):
            labels = None if stratify is None else [stratify[i] for i in free]
            part = patient_split(free_groups, val_fraction, seed, stratify=labels)
            train_groups.update(part.train_patients)
            val_groups.update(part.val_patients)
        else:
            train_groups.update(free_groups)
    if not val_groups:
        return _item_split(data, groups, free, val_fraction, seed, stratify)
    test = {i for i, item in enumerate(data.items) if item.split == "test"}
    train_idx = [i for i, g in enumerate(groups) if g in train_groups and i not in test]
    val_idx = [i for i, g in enumerate(groups) if g in val_groups and i not in test]
    order = list(dict.fromkeys(groups))
    return PatientSplit(
        train_indices=np.asarray(train_idx, dtype=np.int64),
        val_indices=np.asarray(val_idx, dtype=np.int64),
        train_patients=tuple(g for g in order if g in train_groups),
        val_patients=tuple(g for g in order if g in val_groups),
    )


def _item_split(data: Dataset, groups: Sequence[Hashable], free: Sequence[int],
                val_fraction: float, seed: int, stratify: Sequence[int] | None
                ) -> PatientSplit:
    """The fallback of :func:`task_split` when every free item belongs to one patient.

    The free items (tiles, slices) are split one by one, stratified when possible, and a
    warning says that validation now sees the training patient. Items fixed in ``train``
    stay there.

    Raises
    ------
    DataError
        Fewer than two free items, or no validation item at all.
    """
    if len(free) < 2 or not 0.0 < val_fraction < 1.0:
        raise DataError(f"{data.path}: no validation patients: the split needs at least two "
                        "patients, two items of one patient, or items marked split='val'")
    labels = None if stratify is None else [stratify[i] for i in free]
    try:
        part = patient_split(list(free), val_fraction, seed, stratify=labels)
    except ValueError:  # every stratum holds one item: split without strata
        part = patient_split(list(free), val_fraction, seed)
    val_idx = sorted(free[i] for i in part.val_indices)
    in_val = set(val_idx)
    train_idx = [i for i, item in enumerate(data.items)
                 if item.split != "test" and i not in in_val]
    patients = sorted({str(groups[i]) for i in free})
    events.warn(f"{data.path}: all {len(free)} unassigned items belong to one patient "
                f"({', '.join(patients)}): validating on {len(val_idx)} of its items instead "
                "of a patient-wise split. Validation scores are optimistic (neighbouring "
                "tiles or slices of the same patient are on both sides); export a second "
                "patient, or mark validation items (split: val), for an honest score.")
    order = list(dict.fromkeys(groups))
    train_groups = {groups[i] for i in train_idx}
    val_groups = {groups[i] for i in val_idx}
    return PatientSplit(
        train_indices=np.asarray(train_idx, dtype=np.int64),
        val_indices=np.asarray(val_idx, dtype=np.int64),
        train_patients=tuple(g for g in order if g in train_groups),
        val_patients=tuple(g for g in order if g in val_groups),
    )


def class_counts(data: Dataset, indices: Sequence[int]) -> dict[int, int]:
    """Per class id: pixels of the items' masks (mask tasks) or items (label tasks)."""
    items = [data.items[int(i)] for i in indices]
    totals = dict.fromkeys(data.class_map, 0)
    if data.rule.mask is None:
        for item in items:
            if item.label is not None:
                totals[item.label] = totals.get(item.label, 0) + 1
        return totals
    for counts in data.class_pixel_counts(items).values():
        for cid, n in counts.items():
            totals[cid] = totals.get(cid, 0) + n
    return totals


def check_classes_present(data: Dataset, counts: dict[int, int], where: str = "training split"
                          ) -> None:
    """Refuse a split in which a class of the class map never occurs.

    Parameters
    ----------
    counts : dict of int to int
        Pixels (segmentation) or items (classification) per class id in the split.

    Raises
    ------
    DataError
        Names the absent classes.
    """
    absent = [f"{cid} ({name})" for cid, name in sorted(data.class_map.items())
              if counts.get(cid, 0) == 0]
    if absent:
        raise DataError(f"{data.path}: class(es) {', '.join(absent)} absent from the {where}; "
                        "add examples, or remove the class from the class map")


def is_synthetic(config: TrainConfig, data: Dataset) -> bool:
    """Whether a model trained on ``data`` must say it was trained on synthetic data."""
    return bool(config.synthetic or any(item.extra.get("synthetic") for item in data.items))


def build_spec(name: str, arch_overrides: dict[str, Any] | None = None,
               registry: ModelRegistry | None = None, *, data: Dataset | None = None,
               init: str | None = None, **changes: Any) -> ModelSpec:
    """The declared spec ``name`` with architecture keyword overrides (None values ignored).

    The default registry holds the declared specs, not those of the checkpoints that ship
    with the package. With ``data``, ``extra["training_data"]`` names the dataset and, when
    its items come from a known public set, ``extra["training_data_licence"]`` records that
    set's licence (:func:`training_data_extra`); the UI shows both as the weights' provenance.
    With ``init`` (a checkpoint of the same architecture, e.g. the shipped weights the GUI
    starts from), its network size is the default, so its weights fit; explicit overrides
    still win.
    """
    spec = (registry or ModelRegistry(bundled=False)).get(name)
    given = {**init_arch_kwargs(init, spec),
             **{k: v for k, v in (arch_overrides or {}).items() if v is not None}}
    if given:
        spec = replace(spec, arch_kwargs={**spec.arch_kwargs, **given})
    spec = replace(spec, **changes) if changes else spec
    if data is not None:
        spec = replace(spec, extra={**spec.extra, **training_data_extra(data)})
    return spec


def init_arch_kwargs(init: str | None, spec: ModelSpec) -> dict[str, Any]:
    """The architecture keywords of checkpoint ``init`` (its sidecar; no weights read) when it
    is of ``spec``'s architecture, else ``{}`` (no init, another network, unreadable)."""
    if not init:
        return {}
    try:
        found = read_spec(init)
    except (OSError, ValueError):
        return {}
    if found.architecture != spec.architecture:
        return {}
    return dict(found.arch_kwargs)


def training_data_extra(data: Dataset) -> dict[str, Any]:
    """``training_data`` (:func:`training_data_name`) and, when the items' source paths lie
    in a known public set (:mod:`napari_neuroseg.models.data_licences`),
    ``training_data_licence``: the entries a checkpoint's ``spec.extra`` gets."""
    extra: dict[str, Any] = {"training_data": training_data_name(data)}
    sources = (getattr(item, "source", None) for item in data.items)
    licence = licence_record(licence_of_sources(s.get("path") for s in sources
                                                if isinstance(s, dict)))
    if licence is not None:
        extra["training_data_licence"] = licence
    return extra


def training_data_name(data: Dataset) -> str:
    """``"<dataset folder> (<n> <modality> items)"``: what a checkpoint says it learnt from."""
    return f"{data.path.name} ({len(data.items)} {data.modality} items)"


def init_weights(model: nn.Module, init: str | None, *, strict: bool = True
                 ) -> LoadedModel | None:
    """Load the weights of checkpoint ``init`` into ``model`` (nothing when ``init`` is None).

    With ``strict=False`` only the tensors whose names and shapes match are copied (a new
    head of another size keeps its fresh initialisation); the skipped names are printed.

    Returns
    -------
    LoadedModel or None
        The loaded checkpoint, for callers that need its spec.

    Raises
    ------
    DataError
        ``strict`` and the checkpoint does not fit the model (names the mismatches).
    """
    if not init:
        return None
    loaded = load_checkpoint(init, device="cpu")
    source = loaded.model.state_dict()
    target = model.state_dict()
    mismatched = sorted(k for k in target if k not in source or source[k].shape != target[k].shape)
    if mismatched and strict:
        raise DataError(f"{init}: checkpoint {loaded.spec.name!r} does not fit this model "
                        f"({len(mismatched)} tensors differ, e.g. {', '.join(mismatched[:4])})")
    keep = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(keep, strict=False)
    if mismatched:
        print(f"--init {init}: kept the fresh initialisation of {len(mismatched)} tensors "
              f"({', '.join(mismatched[:4])}{'...' if len(mismatched) > 4 else ''})",
              flush=True)
    return loaded


def make_loaders(train: TorchDataset, val: TorchDataset | None, config: TrainConfig,
                 dist: DistInfo | None = None, *, sampler: Sampler | None = None,
                 collate_fn: Callable | None = None, val_batch_size: int | None = None
                 ) -> tuple[DataLoader, DataLoader | None]:
    """Training and validation loaders, seeded, sharded across ranks under DDP.

    Parameters
    ----------
    sampler : Sampler, optional
        Replaces shuffling (an oversampler); a rank-aware one (``num_replicas``) is kept
        as it is under DDP.
    """
    generator = torch.Generator().manual_seed(config.seed)
    common = {"num_workers": config.num_workers, "worker_init_fn": seed_worker,
              "collate_fn": collate_fn}
    train_loader = DataLoader(train, batch_size=config.batch_size, shuffle=sampler is None,
                              sampler=sampler, generator=generator, **common)
    if dist is not None:
        train_loader = distributed_loader(train_loader, dist, seed=config.seed)
    val_loader = None if val is None else DataLoader(
        val, batch_size=val_batch_size or config.batch_size, shuffle=False, **common)
    return train_loader, val_loader


def optimizer_factory(config: TrainConfig, kind: str = "adam"
                      ) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """``model -> optimiser`` over the trainable parameters with the config's lr and decay."""
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
               # Keras' RMSprop defaults (rho 0.9, epsilon 1e-7), as GBM_WSSM used it
               "rmsprop": partial(torch.optim.RMSprop, alpha=0.9, eps=1e-7)}
    if kind not in classes:
        raise ValueError(f"optimizer must be one of {sorted(classes)}, not {kind!r}")

    def factory(model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return classes[kind](params, lr=config.lr, weight_decay=config.weight_decay)

    return factory


def trainer_options(config: TrainConfig, dist: DistInfo | None = None) -> dict[str, Any]:
    """The :class:`training.loop.Trainer` keyword arguments that come straight from the config."""
    return {
        "epochs": config.epochs, "device": config.device, "amp": config.amp,
        "channels_last": config.channels_last,
        "grad_clip": config.grad_clip, "monitor": config.monitor, "mode": config.mode,
        "run_dir": config.out, "seed": config.seed, "dist": dist,
        "early_stopping_patience": config.early_stopping_patience,
        "on_progress": events.current(),  # JSON lines under --progress jsonl, else the bar
        "run_config": effective_config(config),
        "evaluate_init": bool(config.init),  # compare the retrained model with its start
    }


def write_outputs(config: TrainConfig, spec: ModelSpec, data: Dataset, metrics: dict[str, Any],
                  history: dict[str, list[Any]], *, plots: Sequence[Path] = (),
                  notes: Sequence[str] = (), dist: DistInfo | None = None) -> None:
    """Write ``metrics.json``, the history plot and ``report.md`` into the run folder.

    Nothing is written without ``config.out``, or on ranks other than 0. A model whose spec
    says it is synthetic gets that said at the top of the report.
    """
    if not config.out or (dist is not None and not dist.is_main):
        return
    folder = RunFolder(Path(config.out)).create()
    atomic_write_json(folder.metrics, metrics)
    all_plots = [plot_history(history, folder.plots / "history.png"), *plots]
    lead = []
    if spec.synthetic:
        lead.append("**Trained on synthetic data: not clinically meaningful.**")
    lead.append(f"Dataset: `{data.path}` ({len(data.items)} items, task {data.task!r}).")
    write_report(folder, title=f"{spec.name} on {data.path.name}", metrics=metrics,
                 history=history, plots=all_plots, notes=[*lead, *notes])
