"""Data side of the ``stain`` task: unpaired tile pairs and the checks made before training.

Every check raises :class:`training.tasks._common.DataError` naming the dataset and what to
change, before any network is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from training.augment import FlipRotate
from training.split import PatientSplit
from training.tasks._common import DataError
from training.tasks.stain.metrics import pair_map

__all__ = ["SIDES", "UnpairedTiles", "check_dataset", "check_monitor", "crop_size",
           "domain_sides"]

SIDES = ("train_a", "train_b", "val_a", "val_b")


class UnpairedTiles(TorchDataset):
    """``(A tile, B tile)`` normalised ``(3, crop, crop)`` tensors, as the reference pairs them.

    Length ``length`` or ``max(n_A, n_B)``; item ``i`` is A tile ``i % n_A`` with a random B
    tile (``train``), or B tile ``i % n_B`` (validation, deterministic centre crops). With
    ``by_area`` the random B tile is drawn in proportion to its pixels, so a few large tiles
    (MoNuSeg's 1000 px) weigh as much as the same area of many small ones (CoNSeP's 256 px).
    """

    def __init__(self, data: Dataset, a_indices: np.ndarray, b_indices: np.ndarray, crop: int,
                 spec: ModelSpec, *, train: bool, augment: bool = False,
                 length: int | None = None, by_area: bool = False) -> None:
        self.data, self.crop, self.train = data, int(crop), train
        self.a, self.b = [int(i) for i in a_indices], [int(i) for i in b_indices]
        self.normalization = spec.input.normalization
        self.flip = FlipRotate() if augment else None
        self.length = int(length) if length else max(len(self.a), len(self.b))
        area = np.asarray([np.prod(data.items[i].shape[:2]) for i in self.b], np.float64)
        self.b_weights = area / area.sum() if by_area and area.size else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = (np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
               if self.train else None)  # torch is reseeded per epoch (and per worker)
        if rng is None:
            j = i % len(self.b)
        elif self.b_weights is None:
            j = int(rng.integers(len(self.b)))
        else:
            j = int(rng.choice(len(self.b), p=self.b_weights))
        return self._tile(self.a[i % len(self.a)], rng), self._tile(self.b[j], rng)

    def _tile(self, index: int, rng: np.random.Generator | None) -> torch.Tensor:
        image = np.asarray(self.data.read_image(self.data.items[index]))[..., :3]
        (h, w), c = image.shape[:2], self.crop
        if rng is not None:
            top, left = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        else:
            top, left = (h - c) // 2, (w - c) // 2
        image = image[top:top + c, left:left + c]
        if self.flip is not None and rng is not None:
            image, _ = self.flip(image, None, rng)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
        return normalize(x[None], self.normalization)[0]


def check_dataset(data: Dataset) -> None:
    """Refuse non-RGB tiles, a missing domain and inconsistent pairs, before training."""
    bad = [item.id for item in data.items if len(item.shape) != 3 or item.shape[2] != 3]
    if bad:
        raise DataError(f"{data.path}: stain translation needs RGB tiles (h, w, 3); not RGB: "
                        f"{', '.join(bad[:5])}")
    for domain, stain in (("A", "IHC"), ("B", "H&E")):
        if not any(item.domain == domain for item in data.items):
            raise DataError(f"{data.path}: no items of domain {domain!r} ({stain}); CycleGAN "
                            "needs tiles of both stains")
    try:
        pair_map(data)
    except ValueError as err:
        raise DataError(str(err)) from err


def domain_sides(data: Dataset, split: PatientSplit) -> dict[str, np.ndarray]:
    """Item indices of each domain on each side; every one must be non-empty."""
    domains = np.asarray([item.domain for item in data.items])
    sides = {f"{side}_{d.lower()}": idx[domains[idx] == d]
             for side, idx in (("train", split.train_indices), ("val", split.val_indices))
             for d in ("A", "B")}
    empty = [name for name in SIDES if sides[name].size == 0]
    if empty:
        raise DataError(f"{data.path}: no tiles for {', '.join(empty)} (the split is by "
                        "patient, else slide): add tiles of both domains from more patients, "
                        "or mark items split='train' / 'val'")
    return sides


def crop_size(config: Any, data: Dataset, sides: dict[str, np.ndarray]) -> int:
    """``config.crop_size``, or the smallest tile side if smaller, down to a multiple of 4.

    Raises
    ------
    DataError
        Too small for the discriminator (``3 * 2**disc_layers`` px give one patch logit).
    """
    smallest = min(min(data.items[int(i)].shape[:2]) for idx in sides.values() for i in idx)
    crop = min(config.crop_size, smallest)
    crop -= crop % 4
    need = max(8, 3 * 2**config.disc_layers)  # PatchGAN: size / 2**layers - 2 >= 1 logit
    if crop < need:
        raise DataError(f"{data.path}: tiles of {smallest} px are too small for crop_size "
                        f"{config.crop_size} and disc_layers {config.disc_layers} (need "
                        f">= {need} px)")
    return crop


def check_monitor(config: Any, val_pairs: dict[str, str]) -> None:
    """Refuse a ``monitor`` that no epoch will report (e.g. ``paired_*`` without pairs)."""
    terms = ["loss_g", "loss_d", "g_adv_ab", "g_adv_ba", "cycle_a", "cycle_b", "d_a", "d_b"]
    if config.lambda_identity > 0:
        terms += ["identity_a", "identity_b"]
    known = {"epoch", "train_loss", "val_loss", "cycle_psnr_a", "cycle_ssim_a", "cycle_psnr_b",
             "cycle_ssim_b", "color_distance_ab", "color_distance_ba",
             "color_distance_untranslated", "identity_psnr_a", "identity_ssim_a",
             "identity_psnr_b", "identity_ssim_b", *(f"train_{term}" for term in terms)}
    if val_pairs:
        known |= {"paired_psnr_ab", "paired_ssim_ab", "paired_psnr_ba", "paired_ssim_ba"}
    if config.monitor not in known:
        raise DataError(f"monitor {config.monitor!r} is not reported for this dataset "
                        "(paired_* need pairs in the validation split); one of "
                        f"{', '.join(sorted(known))}")
