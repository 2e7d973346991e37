"""``python -m training mri``: FLAIR abnormality segmentation of LGG MRI slices (seed 001).

U-Net (the seed's 5-floor model, ``mri-flair-unet``) or TransUNet (``mri-flair-transunet``) on
the 3-channel (pre-contrast, FLAIR, post-contrast) slices of a dataset in the export layout
(docs/dataset-format.md; ``napari_neuroseg.dataset.convert_kaggle_lgg`` converts a Kaggle
``kaggle_3m`` folder). Patient-wise validation split; per-slice and per-volume Dice and false
positives on empty slices (:class:`training.metrics.MRIMetrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from training.augment import tile_augment
from training.config import TrainConfig
from training.loop import Trainer, seed_worker
from training.losses import make_loss
from training.metrics import MRIMetrics
from training.report import plot_history, write_report
from training.runfolder import RunFolder, atomic_write_json
from training.split import patient_split

MODELS = ("mri-flair-unet", "mri-flair-transunet")


@dataclass
class MRIConfig(TrainConfig):
    """Options of the ``mri`` task (plus those every task shares).

    Attributes
    ----------
    model : str
        ``mri-flair-unet`` or ``mri-flair-transunet``.
    base_features : int or None
        Override the network width (small runs); None keeps the registry's.
    loss : str
        ``ce``, ``dice``, ``ce+dice``, ``focal``, ``focal+dice``.
    val_fraction : float
        Share of patients held out for validation.
    augment : bool
        Flips, 90° rotations, small affine, colour jitter and cutout on training slices.
    threshold : float
        Probability above which a pixel is abnormal, for the metrics.
    """

    model: str = "mri-flair-unet"
    base_features: int | None = None
    loss: str = "ce+dice"
    val_fraction: float = 0.2
    augment: bool = True
    threshold: float = 0.5
    lr: float = 1e-4
    monitor: str = "slice_dice"
    mode: str = "max"


class SliceData(TorchDataset):
    """Slices of an export-layout dataset as normalised ``(3, H, W)`` tensors and masks."""

    def __init__(self, data: Dataset, indices: np.ndarray, spec: ModelSpec, augment: bool):
        self.data, self.indices, self.spec = data, [int(i) for i in indices], spec
        self.augment = tile_augment() if augment else None

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


def _spec(config: MRIConfig) -> ModelSpec:
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {config.model!r}")
    spec = ModelRegistry().get(config.model)
    if config.base_features is not None:
        spec = replace(spec, arch_kwargs={**spec.arch_kwargs,
                                          "base_features": config.base_features})
    return spec


def _check(data: Dataset) -> None:
    if data.task != "mri":
        raise ValueError(f"{data.path}: a {data.task!r} dataset, not an 'mri' one")
    missing = [item.id for item in data.items if item.patient_id is None]
    if missing:
        raise ValueError(f"{data.path}: items without a patient id (needed for the patient-wise "
                         f"split): {', '.join(missing[:5])}")


def _evaluate(data: Dataset, threshold: float):
    def evaluate(model, loader, device) -> dict[str, float]:
        metrics = MRIMetrics()
        model.eval()
        with torch.inference_mode():
            for x, y, index in loader:
                prob = torch.sigmoid(model(x.to(device)))[:, 0].cpu().numpy()
                ids = [data.items[int(i)].patient_id for i in index]
                metrics.update(y.numpy() > 0, prob >= threshold, ids)
        return {k: v for k, v in metrics.compute().items() if isinstance(v, int | float)}

    return evaluate


def run(config: MRIConfig) -> dict[str, Any]:
    """Train (or resume) and return the final validation metrics."""
    data = Dataset.open(config.data)
    _check(data)
    spec = _spec(config)
    model = ModelRegistry().build(spec)
    if config.init:
        model.load_state_dict(load_checkpoint(config.init).model.state_dict())
    split = patient_split([i.patient_id for i in data.items], config.val_fraction, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(SliceData(data, split.train_indices, spec, config.augment),
                       batch_size=config.batch_size, shuffle=True, generator=generator,
                       num_workers=config.num_workers, worker_init_fn=seed_worker)
    val = DataLoader(SliceData(data, split.val_indices, spec, False),
                     batch_size=config.batch_size, num_workers=config.num_workers)
    trainer = Trainer(
        model, spec, train, val, make_loss(config.loss),
        lambda m: torch.optim.Adam((p for p in m.parameters() if p.requires_grad),
                                   lr=config.lr, weight_decay=config.weight_decay),
        epochs=config.epochs, device=config.device, amp=config.amp, grad_clip=config.grad_clip,
        evaluate_fn=_evaluate(data, config.threshold), monitor=config.monitor,
        mode=config.mode, run_dir=config.out, seed=config.seed,
        early_stopping_patience=config.early_stopping_patience,
    )
    history = trainer.fit(resume=config.resume)
    metrics = _evaluate(data, config.threshold)(trainer.model, val, trainer.device)
    metrics.update(train_patients=len(split.train_patients), val_patients=len(split.val_patients))
    if config.out:
        folder = RunFolder(Path(config.out))
        atomic_write_json(folder.metrics, metrics)
        plots = [plot_history(history, folder.plots / "history.png")]
        write_report(folder, title=f"{spec.name} on {data.path.name}", metrics=metrics,
                     history=history, plots=plots,
                     notes=[f"patient-wise split: {len(split.val_patients)} validation "
                            f"patients", f"dataset: {data.path}"])
    return metrics
