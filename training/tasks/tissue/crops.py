"""Random crops of whole sections for the ``tissue`` task (GBM_WSSM's 224 px training crops).

GBM_WSSM trains on random 224x224 crops of whole IvyGAP sections (1024x1024). Here every
prepared section (tissue-aware mask, Macenko normalisation, :class:`TilePrep`) is optionally
downscaled by an integer factor and kept in memory (a few dozen sections: training data, not
a slide); a grid of crop positions (``stride`` apart) gives the samples, so the LGG tissue recipe's
rare-class oversampling can repeat the crops that hold infiltrating tumour or leading edge.
Each draw moves its crop by up to half a stride at random, so repeats are not copies. With
``crop=None`` a sample is the whole prepared section (validation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.models.spec import ModelSpec
from training.augment import histology_augment
from training.tasks._common import DataError
from training.tasks.tissue.data import IGNORE_INDEX, TilePrep, tile_sample


def downscale(image: np.ndarray, mask: np.ndarray, factor: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Block-mean the image and take each block's most frequent mask value.

    Sides that are not a multiple of ``factor`` lose their last rows and columns. Ignored
    pixels (``IGNORE_INDEX``) count as a value like any other.
    """
    if factor == 1:
        return image, mask
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, -1)
    small = blocks.mean(axis=(1, 3)).round().astype(np.uint8)
    labels = mask[:h, :w].reshape(h // factor, factor, w // factor, factor)
    labels = labels.transpose(0, 2, 1, 3).reshape(h // factor, w // factor, -1)
    top = int(labels.max()) + 1
    counts = np.stack([(labels == v).sum(-1) for v in range(top)], axis=-1)
    return small, counts.argmax(-1).astype(mask.dtype)


def crop_origins(shape: Sequence[int], crop: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of a grid of ``crop`` squares ``stride`` apart covering ``shape``.

    The last row and column of the grid sit flush with the far edges.

    Raises
    ------
    DataError
        The image is smaller than the crop.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < crop or w < crop:
        raise DataError(f"a {h}x{w} section is smaller than the {crop} px crop")

    def axis(n: int) -> list[int]:
        starts = list(range(0, n - crop + 1, stride))
        return starts if starts[-1] == n - crop else [*starts, n - crop]

    return [(y, x) for y in axis(h) for x in axis(w)]


class SectionCrops(TorchDataset):
    """Normalised crops (or whole sections) of prepared, downscaled sections.

    Parameters
    ----------
    prep : TilePrep
        Reads and prepares item ``i``: the normalised uint8 RGB image and its class mask.
    indices : sequence of int
        Dataset items used.
    spec : ModelSpec
        Its input normalisation is applied.
    factor : int
        Integer downscaling of every section (2: a 1024 px section becomes 512 px).
    crop : int or None
        Side of the square crops; None: one sample per whole section.
    stride : int
        Distance between crop positions of the grid (default: ``crop // 2``).
    augment : bool
        Flips, 90 degree turns, small affine and HED stain jitter
        (:func:`training.augment.histology_augment`) and the random shift of each crop.
    size_multiple : int
        Whole sections are cut down to a multiple of this (the network's).
    """

    def __init__(self, prep: TilePrep, indices: Sequence[int], spec: ModelSpec, *,
                 factor: int = 1, crop: int | None = None, stride: int | None = None,
                 augment: bool = False, size_multiple: int = 1) -> None:
        if factor < 1:
            raise ValueError(f"the downscaling factor must be a positive integer, not {factor}")
        self.spec, self.crop = spec, crop
        self.stride = stride or (crop // 2 if crop else 0)
        self.augment = histology_augment() if augment else None
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        for i in indices:
            image, mask = downscale(*prep(int(i)), factor)
            if crop is None:
                h = image.shape[0] // size_multiple * size_multiple
                w = image.shape[1] // size_multiple * size_multiple
                image, mask = image[:h, :w], mask[:h, :w]
            self.images.append(image)
            self.masks.append(mask)
        self.samples: list[tuple[int, int, int]] = []
        for k, image in enumerate(self.images):
            origins = [(0, 0)] if crop is None else crop_origins(image.shape, crop, self.stride)
            self.samples += [(k, y, x) for y, x in origins]

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Pixel counts per sample ``(len(self), n_classes)`` at the grid positions."""
        rows = []
        for k, y, x in self.samples:
            mask = self._window(self.masks[k], y, x)
            mask = mask[mask != IGNORE_INDEX]
            rows.append(np.bincount(mask.ravel(), minlength=n_classes)[:n_classes])
        return np.stack(rows)

    def _window(self, array: np.ndarray, y: int, x: int) -> np.ndarray:
        return array if self.crop is None else array[y:y + self.crop, x:x + self.crop]

    def _shifted(self, k: int, y: int, x: int) -> tuple[int, int]:
        if self.crop is None or self.augment is None:
            return y, x
        h, w = self.images[k].shape[:2]
        reach = self.stride // 2
        dy, dx = (int(v) for v in torch.randint(-reach, reach + 1, (2,)))
        return (min(max(y + dy, 0), h - self.crop), min(max(x + dx, 0), w - self.crop))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, y, x = self.samples[i]
        y, x = self._shifted(k, y, x)
        return tile_sample(self._window(self.images[k], y, x),
                           self._window(self.masks[k], y, x), self.spec, self.augment)
