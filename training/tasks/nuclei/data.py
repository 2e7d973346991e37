"""Tiles of a ``nuclei`` dataset as HoVer-Net training samples (crops, augmentation, targets).

Each sample is ``(x, {"np": ..., "hv": ...}, instances)``: the normalised ``(3, h, w)`` image,
the targets of :func:`training.tasks.nuclei.targets.nuclei_targets` computed *after* cropping
and augmentation (so a nucleus cut by the crop gets the centre of its visible part, as in the
reference code), and the instance labels (for the instance metrics). Without ``crop`` the whole
tile is returned (validation, evaluation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.stain import MacenkoNormalizer
from training.augment import (
    ColorJitter,
    Compose,
    FlipRotate,
    GaussianBlur,
    RandomApply,
    StainAugment,
)
from training.tasks.nuclei.targets import nuclei_targets

__all__ = ["NucleiTiles", "crops_per_tile", "macenko_normalise", "nuclei_augment", "random_crop",
           "rgb"]

#: Fill of image pixels a crop adds beyond a tile smaller than the crop (white glass).
PAD_VALUE = 255


def nuclei_augment(jitter_p: float = 0.5, stain_p: float = 0.5, blur_p: float = 0.2) -> Compose:
    """HoVer-Net-style augmentation: flips / 90° rotations, colour jitter, stain, blur.

    The paper also uses affine warps and median blur; the affine warp is left out because
    nearest-neighbour warping of instance labels with replicated borders invents nuclei at
    the crop's edges. Geometric steps move the instance mask with the image.
    """
    return Compose([FlipRotate(), RandomApply(ColorJitter(), jitter_p),
                    RandomApply(StainAugment(), stain_p), RandomApply(GaussianBlur(), blur_p)])


def rgb(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` view of a grey, RGB or RGBA tile (alpha dropped, grey repeated)."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., :3]
    raise ValueError(f"a nuclei tile must be grey, RGB or RGBA, got shape {image.shape}")


def macenko_normalise(image: np.ndarray) -> np.ndarray:
    """Macenko-normalise one tile to the H&E reference (fitted on the tile itself).

    Tiles with too few stained pixels for a stable estimate are returned unchanged (as uint8).
    """
    uint8 = np.clip(image, 0, 255).astype(np.uint8)
    try:
        return MacenkoNormalizer().fit(uint8).transform(uint8)
    except (ValueError, np.linalg.LinAlgError):
        return uint8


def random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size x size`` window of a tile and its mask.

    A side shorter than ``size`` is padded at its end: the image with white
    (:data:`PAD_VALUE`), the mask with background.
    """
    height, width = mask.shape
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=PAD_VALUE)
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)))
        height, width = mask.shape
    y = int(rng.integers(height - size + 1))
    x = int(rng.integers(width - size + 1))
    return image[y:y + size, x:x + size], mask[y:y + size, x:x + size]


class NucleiTiles(TorchDataset):
    """Samples of the items ``indices`` of a ``nuclei`` dataset.

    Parameters
    ----------
    data : Dataset
    indices : array-like of int
        Items to use.
    spec : ModelSpec
        Its input normalisation is applied.
    crop : int, optional
        Side of the random training crops; None gives whole tiles (no randomness).
    crops_per_item : int
        Samples drawn from each item per epoch (``len`` is ``len(indices) * crops_per_item``).
    augment : callable, optional
        ``aug(image, mask, rng) -> (image, mask)`` applied after cropping.
    macenko : bool
        Macenko-normalise every tile first (cached per item).
    """

    def __init__(self, data: Dataset, indices, spec: ModelSpec, *, crop: int | None = None,
                 crops_per_item: int = 1, augment=None, macenko: bool = False) -> None:
        if crops_per_item < 1:
            raise ValueError(f"crops_per_item must be >= 1, got {crops_per_item}")
        self.data, self.spec = data, spec
        self.indices = [int(i) for i in indices]
        self.crop, self.crops_per_item = crop, int(crops_per_item)
        self.augment, self.macenko = augment, macenko
        self._normalised: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.indices) * self.crops_per_item

    @property
    def same_shape(self) -> bool:
        """Whether all samples have one shape (so they can be batched)."""
        if self.crop is not None:
            return True
        shapes = {tuple(self.data.items[i].shape[:2]) for i in self.indices}
        return len(shapes) <= 1

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The RGB tile (Macenko-normalised if asked) and instance mask of item ``index``."""
        item = self.data.items[index]
        if self.macenko:
            if index not in self._normalised:
                self._normalised[index] = macenko_normalise(rgb(self.data.read_image(item)))
            image = self._normalised[index]
        else:
            image = rgb(self.data.read_image(item))
        mask = self.data.read_mask(item)
        if mask is None:
            raise ValueError(f"{self.data.path}: item {item.id} has no instance mask")
        return image, mask

    def __getitem__(self, i: int):
        image, mask = self.read(self.indices[i // self.crops_per_item])
        if self.crop is not None or self.augment is not None:
            # seeded from torch, which the trainer reseeds every epoch (and per worker)
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
            if self.crop is not None:
                image, mask = random_crop(image, mask, self.crop, rng)
            if self.augment is not None:
                image, mask = self.augment(image, mask, rng)
        instances = np.ascontiguousarray(mask).astype(np.int64)
        np_target, hv = nuclei_targets(instances)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
        x = normalize(x[None], self.spec.input.normalization)[0]
        targets = {"np": torch.from_numpy(np_target), "hv": torch.from_numpy(hv)}
        return x, targets, torch.from_numpy(instances)


def crops_per_tile(tile_shape: tuple[int, int], crop: int) -> int:
    """Crops per tile and epoch that cover the tile's area once on average (at least 1)."""
    return max(1, math.ceil(tile_shape[0] * tile_shape[1] / crop**2))
