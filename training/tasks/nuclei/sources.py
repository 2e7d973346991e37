"""Several labelled nuclei sources, resampled to one working resolution, as training samples.

A *source* is one ``nuclei`` dataset (one lab or collection: the LGG tiles, MoNuSeg, CoNSeP)
with a known µm/px. ``--data`` names either one dataset or a folder whose sub-folders are
datasets (one per source, named by the folder). Every tile is read at its own resolution and
resampled to the model's working resolution (``spec.input.resolution``), so a 40x tile
(0.25 µm/px) and a 20x tile (0.5 µm/px) show a nucleus at the same size in pixels.

Training samples (:class:`MixedCrops`) are *source-balanced*: sample ``i`` comes from source
``i mod n``, whatever the sources' sizes, then from a random training tile of it. Each is a
random window of ``crop`` working pixels, zoomed by a random factor in ``[1/scale_jitter,
scale_jitter]`` (scale augmentation), then augmented (flips/rotations, colour, HED stain
jitter, blur, and Macenko towards a random training tile's stains, :class:`RandomMacenko`).
The nucleus-type target (``"tp"``) comes from the items' ``extra["types"]``; samples of a
source without types carry :data:`~training.tasks.nuclei.targets.IGNORE_TYPE` everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.dataset.manifest import MANIFEST_NAME
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.stain import MacenkoNormalizer
from training.tasks._common import DataError, open_task_dataset, task_split
from training.tasks.nuclei.data import PAD_VALUE, rgb
from training.tasks.nuclei.targets import IGNORE_TYPE, nuclei_targets

__all__ = ["MixedCrops", "RandomMacenko", "Source", "SourceSet", "WorkingTiles", "is_source_folder",
           "open_sources", "resize_labels", "resize_rgb", "type_lookup"]


@dataclass(frozen=True)
class Source:
    """One labelled source and its patient-wise split.

    Attributes
    ----------
    name : str
        The dataset folder's name (``monuseg``).
    data : Dataset
    mpp : float
        µm per pixel of its tiles.
    train, val : numpy.ndarray of int
        Item indices of the two sides.
    typed : bool
        Whether its items carry nucleus types (``extra["types"]``).
    """

    name: str
    data: Dataset
    mpp: float
    train: np.ndarray
    val: np.ndarray
    typed: bool


class SourceSet:
    """The sources together, with what a run's outputs need of "the dataset" (path, items,
    task, modality)."""

    def __init__(self, path: str | Path, sources: Sequence[Source]) -> None:
        self.path, self.sources = Path(path), tuple(sources)
        self.items = tuple(item for s in self.sources for item in s.data.items)
        self.task, self.modality = "nuclei", self.sources[0].data.modality

    @property
    def names(self) -> tuple[str, ...]:
        """Source names in order."""
        return tuple(s.name for s in self.sources)


def is_source_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder of datasets rather than a dataset."""
    if not path:
        return False
    root = Path(path)
    return root.is_dir() and not (root / MANIFEST_NAME).is_file() and any(
        (sub / MANIFEST_NAME).is_file() for sub in root.iterdir() if sub.is_dir())


def open_sources(path: str | Path, names: Sequence[str] | None, val_fraction: float,
                 seed: int) -> SourceSet:
    """Open the sources under ``path`` (all, or those ``names``) and split each by patient.

    Raises
    ------
    DataError
        A named source is missing, a dataset is not a ``nuclei`` dataset, or its items have
        no µm/px (the resampling needs it: give it when converting).
    """
    root = Path(path)
    folders = [root] if (root / MANIFEST_NAME).is_file() else sorted(
        sub for sub in root.iterdir() if (sub / MANIFEST_NAME).is_file())
    by_name = {folder.name: folder for folder in folders}
    wanted = list(names) if names else list(by_name)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise DataError(f"{root}: no source dataset {missing} (found {sorted(by_name)})")
    sources = []
    for name in wanted:
        data = open_task_dataset(str(by_name[name]), "nuclei")
        mpps = {item.region.get("mpp") for item in data.items}
        if None in mpps or not mpps:
            raise DataError(f"{data.path}: items without a µm/px; a source is resampled to the "
                            "model's resolution, so convert it with mpp=...")
        split = task_split(data, val_fraction, seed)
        typed = all("types" in item.extra for item in data.items)
        sources.append(Source(name, data, float(np.median(list(mpps))), split.train_indices,
                              split.val_indices, typed))
    return SourceSet(root, sources)


def type_lookup(item_extra: dict[str, Any], max_id: int) -> np.ndarray:
    """``lut[instance id] -> type`` (0 for background and instances without a type)."""
    lut = np.zeros(max_id + 1, np.int64)
    for key, value in (item_extra.get("types") or {}).items():
        if int(key) <= max_id:
            lut[int(key)] = int(value)
    return lut


def resize_rgb(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear, antialiased resize of an ``(H, W, 3)`` uint8 image (unchanged if same size)."""
    if image.shape[:2] == tuple(shape):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))[None]
    out = F.interpolate(t, size=tuple(shape), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image (pixel centres sampled)."""
    height, width = labels.shape
    if (height, width) == tuple(shape):
        return labels
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * height / shape[0]).astype(np.int64),
                      height - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(np.int64),
                      width - 1)
    return labels[rows[:, None], cols[None, :]]


def working_shape(shape: Sequence[int], source_mpp: float, working_mpp: float) -> tuple[int, int]:
    """A tile's ``(h, w)`` at the working resolution."""
    factor = source_mpp / working_mpp
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


class RandomMacenko:
    """Macenko-normalise a crop towards the stains of a random reference tile.

    Parameters
    ----------
    targets : sequence of (stain_matrix, max_concentrations)
        Stain estimates of training tiles (:meth:`from_tiles`).

    A crop with too few stained pixels for an estimate is returned unchanged.
    """

    def __init__(self, targets: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        if not targets:
            raise ValueError("RandomMacenko needs at least one target stain estimate")
        self.targets = list(targets)

    @classmethod
    def from_tiles(cls, tiles: Sequence[np.ndarray]) -> RandomMacenko:
        """Targets estimated on ``tiles`` (those without a stable estimate skipped)."""
        targets = []
        for tile in tiles:
            try:
                fitted = MacenkoNormalizer().fit(np.asarray(tile, np.uint8))
            except (ValueError, np.linalg.LinAlgError):
                continue
            targets.append((fitted.stain_matrix.copy(), fitted.max_concentrations.copy()))
        return cls(targets)

    def __call__(self, image: np.ndarray, mask=None, rng=None):
        rng = rng if rng is not None else np.random.default_rng()
        matrix, concentrations = self.targets[int(rng.integers(len(self.targets)))]
        normaliser = MacenkoNormalizer()
        try:
            normaliser.fit(np.asarray(image, np.uint8))
        except (ValueError, np.linalg.LinAlgError):
            return image, mask
        normaliser.target_stain_matrix = matrix
        normaliser.target_max_concentrations = concentrations
        return normaliser.transform(np.asarray(image, np.uint8)), mask


class _TileCache:
    """Tiles of the sources, read once (native resolution, RGB uint8 + instances)."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)
        self._tiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def read(self, s: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, instances and type lookup of item ``index`` of source ``s``."""
        key = (s, int(index))
        if key not in self._tiles:
            data = self.sources[s].data
            item = data.items[int(index)]
            image = np.clip(rgb(data.read_image(item)), 0, 255).astype(np.uint8)
            mask = data.read_mask(item)
            if mask is None:
                raise DataError(f"{data.path}: item {item.id} has no instance mask")
            instances = np.asarray(mask).astype(np.int64)
            lut = type_lookup(item.extra, int(instances.max()))
            self._tiles[key] = (image, instances, lut)
        return self._tiles[key]


def _sample(image: np.ndarray, instances: np.ndarray, lut: np.ndarray, typed: bool,
            spec: ModelSpec) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    np_target, hv = nuclei_targets(instances)
    types = lut[instances] if typed else np.full(instances.shape, IGNORE_TYPE, np.int64)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
    x = normalize(x[None], spec.input.normalization)[0]
    targets = {"np": torch.from_numpy(np_target), "hv": torch.from_numpy(hv),
               "tp": torch.from_numpy(np.ascontiguousarray(types))}
    return x, targets, torch.from_numpy(np.ascontiguousarray(instances))


class MixedCrops(TorchDataset):
    """Source-balanced random training crops at the working resolution.

    Parameters
    ----------
    sources : sequence of Source
    spec : ModelSpec
        Working resolution (``input.resolution``) and input normalisation.
    crop : int
        Side of a sample in working pixels.
    length : int
        Samples per epoch.
    scale_jitter : float
        Largest zoom factor (and its inverse the smallest); 1 for none.
    augment : callable, optional
        ``aug(image, mask, rng) -> (image, mask)`` after resampling.
    """

    def __init__(self, sources: Sequence[Source], spec: ModelSpec, *, crop: int, length: int,
                 scale_jitter: float = 1.25, augment=None) -> None:
        if scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must be >= 1, got {scale_jitter}")
        self.sources = [s for s in sources if len(s.train)]
        if not self.sources:
            raise DataError("no source has training tiles")
        self.spec, self.crop, self.length = spec, int(crop), int(length)
        self.scale_jitter, self.augment = float(scale_jitter), augment
        self.working_mpp = float(spec.input.resolution or self.sources[0].mpp)
        self.cache = _TileCache(self.sources)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
        s = i % len(self.sources)
        source = self.sources[s]
        image, instances, lut = self.cache.read(s, source.train[rng.integers(len(source.train))])
        zoom = math.exp(rng.uniform(-math.log(self.scale_jitter), math.log(self.scale_jitter)))
        side = max(8, round(self.crop * self.working_mpp / source.mpp / zoom))
        image, instances = _window(image, instances, side, rng)
        image = resize_rgb(image, (self.crop, self.crop))
        instances = resize_labels(instances, (self.crop, self.crop))
        if self.augment is not None:
            image, instances = self.augment(image, instances, rng)
        return _sample(np.asarray(image), np.ascontiguousarray(instances), lut, source.typed,
                       self.spec)


def _window(image: np.ndarray, instances: np.ndarray, side: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """A random ``side`` square of a tile; a tile smaller than that is padded with white."""
    height, width = instances.shape
    pad_h, pad_w = max(0, side - height), max(0, side - width)
    if pad_h or pad_w:
        top, left = int(rng.integers(pad_h + 1)), int(rng.integers(pad_w + 1))
        image = np.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)),
                       constant_values=PAD_VALUE)
        instances = np.pad(instances, ((top, pad_h - top), (left, pad_w - left)))
        height, width = instances.shape
    y, x = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
    return image[y:y + side, x:x + side], instances[y:y + side, x:x + side]


class WorkingTiles(TorchDataset):
    """Whole validation tiles of every source, resampled to the working resolution.

    ``source_of[i]`` is the source index of sample ``i`` (for per-source scores).
    """

    def __init__(self, sources: Sequence[Source], spec: ModelSpec, split: str = "val") -> None:
        self.sources, self.spec = list(sources), spec
        self.working_mpp = float(spec.input.resolution or self.sources[0].mpp)
        self.entries = [(s, int(i)) for s, source in enumerate(self.sources)
                        for i in getattr(source, split)]
        self.source_of = [s for s, _ in self.entries]
        self.cache = _TileCache(self.sources)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        s, index = self.entries[i]
        source = self.sources[s]
        image, instances, lut = self.cache.read(s, index)
        shape = working_shape(instances.shape, source.mpp, self.working_mpp)
        return _sample(resize_rgb(image, shape), resize_labels(instances, shape), lut,
                       source.typed, self.spec)
