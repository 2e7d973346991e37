"""Data side of the ``tissue`` task (the LGG tissue recipe, docs/training-recipes.md): class-map
checks, tile preparation, tile sets.

Every tile goes through :class:`TilePrep` before augmentation and normalisation:

1. the HSV tissue mask (:func:`napari_neuroseg.preprocess.tissue.tissue_mask`, the LGG tissue
   recipe's saturation > 15, value < 240, 5x5 closing and opening) is computed on the raw tile; the
   LGG tissue recipe uses it to make "tissue-aware masks": annotated pixels that are not tissue
   become background (``tissue_mask: relabel``, the default). ``ignore`` leaves them out of the
   loss and the metrics instead; ``off`` uses the masks as given;
2. Macenko stain normalisation maps the tile's stains (estimated per slide, pooled over up to
   ``STAIN_FIT_TILES`` of its tiles, or per tile) to the target stains of a reference tile.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from napari_neuroseg.preprocess.stain import MacenkoNormalizer
from napari_neuroseg.preprocess.tissue import tissue_mask
from training.augment import histology_augment
from training.tasks._common import DataError, group_ids

#: Target value of pixels left out of the loss and the metrics (``tissue_mask: ignore``).
IGNORE_INDEX = 255
TISSUE_MASK_MODES = ("relabel", "ignore", "off")
STAIN_FIT_MODES = ("slide", "tile")
#: Tiles of one slide pooled to estimate its stains (evenly spaced in manifest order).
STAIN_FIT_TILES = 16
_ALIASES = {"bg": "background", "ct": "cellular tumour", "le": "leading edge",
            "it": "infiltrating tumour"}


def canonical_class_name(name: str) -> str:
    """Lower-case, US/UK spelling and abbreviations unified (``"IT"`` -> infiltrating tumour)."""
    text = re.sub(r"[\s_\-]+", " ", name.strip().lower()).replace("tumor", "tumour")
    return _ALIASES.get(text, text)


def fold_lookup(source: Sequence[str], target: Sequence[str], rest: str) -> np.ndarray:
    """Class-id lookup from ``source`` names to ``target`` ones; other classes go to ``rest``.

    Names are compared by :func:`canonical_class_name`. The LGG tissue recipe's LGG classes from
    the 8 GBM regions: background, leading edge and infiltrating tumour keep their class, the four
    other tumour regions (perinecrotic zone, pseudopalisading cells, microvascular proliferation,
    necrosis) become cellular tumour.
    """
    wanted = [canonical_class_name(n) for n in target]
    fallback = wanted.index(canonical_class_name(rest))
    return np.array([wanted.index(n) if n in wanted else fallback
                     for n in (canonical_class_name(m) for m in source)], dtype=np.int64)


def same_classes(class_map: dict[int, str], expected: Sequence[str]) -> bool:
    """Whether ``class_map`` is ``expected`` (ids 0..n-1 in order, names up to aliases)."""
    return ({i: canonical_class_name(n) for i, n in class_map.items()}
            == {i: canonical_class_name(n) for i, n in enumerate(expected)})


def check_class_map(class_map: dict[int, str], expected: Sequence[str], where: str) -> None:
    """Refuse a class map that is not ``expected`` (ids 0..n-1 in order, names up to aliases).

    Raises
    ------
    DataError
        Names the classes that differ and the expected map.
    """
    if not same_classes(class_map, expected):
        shown = ", ".join(f"{i}: {n}" for i, n in enumerate(expected))
        raise DataError(f"{where}: class map {class_map} does not match the tissue classes "
                        f"{{{shown}}} (abbreviations CT, LE, IT are accepted; ids must match)")


def check_tiles(data: Dataset, indices: Sequence[int], size_multiple: int) -> tuple[int, int]:
    """Check that the tiles are RGB, of one size, a multiple of the network's; return the size.

    Raises
    ------
    DataError
        Names the first offending item.
    """
    sizes = set()
    for i in indices:
        item = data.items[int(i)]
        if len(item.shape) != 3 or item.shape[2] != 3:
            raise DataError(f"{data.path}: item {item.id!r} has shape {list(item.shape)}; the "
                            "tissue task needs RGB tiles (h, w, 3)")
        if item.shape[0] % size_multiple or item.shape[1] % size_multiple:
            raise DataError(f"{data.path}: item {item.id!r} is {item.shape[0]}x{item.shape[1]}; "
                            f"tile sides must be multiples of {size_multiple} for this network")
        sizes.add(tuple(item.shape[:2]))
    if len(sizes) > 1:
        raise DataError(f"{data.path}: tiles of several sizes {sorted(sizes)}; export tiles of "
                        "one size")
    return sizes.pop() if sizes else (0, 0)


def _as_rgb(image: np.ndarray, item_id: str) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"item {item_id!r}: the tissue task needs uint8 RGB tiles, got "
                        f"{image.dtype} {image.shape}")
    return image


@dataclass
class TilePrep:
    """Tissue mask and stain normalisation of the tiles of one dataset (see module doc).

    Attributes
    ----------
    data : Dataset
    mode : str
        ``relabel``, ``ignore`` or ``off`` (what non-tissue pixels of the mask become).
    hsv : dict
        ``saturation_min``, ``value_max``, ``kernel`` of :func:`tissue_mask`.
    target : MacenkoNormalizer or None
        Holds the target stains; None: no stain normalisation.
    stain_fit : str
        ``slide`` (one estimate per slide) or ``tile`` (per tile, the slide's on failure).
    normalizers : dict
        Slide group -> fitted normaliser (None where the slide's stains could not be
        estimated: its tiles stay as they are).
    fold : numpy.ndarray or None
        Lookup from the dataset's class ids to the trained classes (e.g. the 8 GBM regions
        folded into the 4 LGG classes, :func:`fold_lookup`); None: the ids as stored.
    """

    data: Dataset
    mode: str = "relabel"
    hsv: dict[str, float] = field(default_factory=dict)
    target: MacenkoNormalizer | None = None
    stain_fit: str = "slide"
    normalizers: dict[Hashable, MacenkoNormalizer | None] = field(default_factory=dict)
    fold: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mode not in TISSUE_MASK_MODES:
            raise ValueError(f"tissue_mask must be one of {TISSUE_MASK_MODES}, not {self.mode!r}")
        if self.stain_fit not in STAIN_FIT_MODES:
            raise ValueError(f"stain_fit must be one of {STAIN_FIT_MODES}, not {self.stain_fit!r}")
        self._groups = group_ids(self.data)

    def tissue(self, image: np.ndarray) -> np.ndarray:
        """The HSV tissue mask of a raw tile."""
        return tissue_mask(image, **self.hsv)

    def _fresh(self) -> MacenkoNormalizer:
        assert self.target is not None
        fresh = MacenkoNormalizer(io=self.target.io, alpha=self.target.alpha,
                                  beta=self.target.beta)
        fresh.target_stain_matrix = self.target.target_stain_matrix
        fresh.target_max_concentrations = self.target.target_max_concentrations
        return fresh

    def fit_slides(self, indices: Sequence[int]) -> list[str]:
        """Estimate the stains of every slide among ``indices``; returns the failed slides."""
        if self.target is None:
            return []
        by_group: dict[Hashable, list[int]] = {}
        for i in indices:
            by_group.setdefault(self._groups[int(i)], []).append(int(i))
        failed = []
        for group, members in by_group.items():
            picks = np.unique(np.linspace(0, len(members) - 1, STAIN_FIT_TILES).round()
                              .astype(int))
            pixels, masks = [], []
            for k in picks:
                item = self.data.items[members[k]]
                image = _as_rgb(self.data.read_image(item), item.id)
                pixels.append(image.reshape(-1, 3))
                masks.append(self.tissue(image).reshape(-1))
            try:
                self.normalizers[group] = self._fresh().fit(np.concatenate(pixels),
                                                            np.concatenate(masks))
            except ValueError:
                self.normalizers[group] = None
                failed.append(str(group))
        return failed

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read item ``index``: the stain-normalised uint8 tile and its (tissue-aware) mask."""
        item = self.data.items[index]
        image = _as_rgb(self.data.read_image(item), item.id)
        mask = self._mask(item)
        tissue = self.tissue(image) if self.mode != "off" or self.stain_fit == "tile" else None
        if self.mode != "off":
            mask[~tissue] = 0 if self.mode == "relabel" else IGNORE_INDEX
        return self._normalise(image, tissue, self._groups[index]), mask

    def _mask(self, item: Any) -> np.ndarray:
        mask = np.asarray(self.data.read_mask(item)).astype(np.int64)
        return mask if self.fold is None else self.fold[mask]

    def _normalise(self, image: np.ndarray, tissue: np.ndarray | None,
                   group: Hashable) -> np.ndarray:
        if self.target is None:
            return image
        normalizer = self.normalizers.get(group)
        if self.stain_fit == "tile":
            try:
                normalizer = self._fresh().fit(image, tissue)
            except ValueError:
                pass  # too little stained tissue in the tile: the slide's estimate
        return image if normalizer is None else normalizer.transform(image)

    def class_counts(self, indices: Sequence[int], n_classes: int) -> np.ndarray:
        """Per-tile pixel counts ``(len(indices), n_classes)`` of the prepared masks."""
        rows = []
        for i in indices:
            item = self.data.items[int(i)]
            mask = self._mask(item)
            if self.mode != "off":
                tissue = self.tissue(_as_rgb(self.data.read_image(item), item.id))
                mask = mask[tissue] if self.mode == "ignore" else np.where(tissue, mask, 0)
            rows.append(np.bincount(mask.ravel(), minlength=n_classes)[:n_classes])
        return np.stack(rows) if rows else np.zeros((0, n_classes), dtype=np.int64)


def stain_target(data: Dataset, reference: str | None, first: int, hsv: dict[str, Any],
                 **params: float) -> MacenkoNormalizer:
    """A normaliser whose target stains are those of the reference tile.

    Parameters
    ----------
    reference : str or None
        Item id of the reference tile; None: item ``first`` (the first training tile).

    Raises
    ------
    DataError
        Unknown item id, or a reference with too little stained tissue.
    """
    try:
        item = data.item(reference) if reference else data.items[first]
    except KeyError:
        raise DataError(f"{data.path}: stain_reference {reference!r} is not an item id") from None
    image = _as_rgb(data.read_image(item), item.id)
    try:
        return MacenkoNormalizer(**params).set_target(image, tissue_mask(image, **hsv))
    except ValueError as err:
        raise DataError(f"{data.path}: the stain reference tile {item.id!r} is unusable ({err}); "
                        "choose another with stain_reference") from err


def target_record(normalizer: MacenkoNormalizer) -> dict[str, Any]:
    """The target stains as JSON (for the model spec), without any source estimate."""
    record = normalizer.to_dict()
    record.update(stain_matrix=None, max_concentrations=None)
    return record


def prep_for_spec(spec: ModelSpec, data: Dataset) -> TilePrep:
    """The :class:`TilePrep` a checkpoint's spec asks for, on another dataset (evaluation).

    Stain normalisation when the spec's preprocessing has ``macenko`` (to the stored target,
    else the default H&E reference, as the plugin does); the tissue-mask handling recorded at
    training (``off`` for checkpoints that recorded none).
    """
    extra = spec.extra or {}
    hsv = dict(extra.get("tissue_mask_hsv") or {})
    target = None
    if "macenko" in spec.input.preprocessing:
        record = extra.get("macenko_target")
        target = MacenkoNormalizer.from_dict(record) if record else MacenkoNormalizer()
    return TilePrep(data, mode=extra.get("tissue_mask_mode", "off"), hsv=hsv, target=target,
                    stain_fit=extra.get("stain_fit", "slide"))


class TileData(TorchDataset):
    """Prepared tiles as normalised ``(3, H, W)`` float tensors and ``(H, W)`` int64 masks.

    Parameters
    ----------
    prep : TilePrep
    indices : sequence of int
        Dataset items; sample ``i`` is item ``indices[i]`` (samplers index this list).
    spec : ModelSpec
        Its input normalisation is applied.
    augment : bool
        The LGG tissue recipe's training augmentation: flips, 90 degree turns, a small affine and
        HED stain jitter (:func:`training.augment.histology_augment`).
    """

    def __init__(self, prep: TilePrep, indices: Sequence[int], spec: ModelSpec,
                 augment: bool) -> None:
        self.prep, self.indices, self.spec = prep, [int(i) for i in indices], spec
        self.augment = histology_augment() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tile_sample(*self.prep(self.indices[i]), self.spec, self.augment)


def tile_sample(image: np.ndarray, mask: np.ndarray, spec: ModelSpec,
                augment: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared uint8 RGB tile and its mask as a normalised ``(3, H, W)`` float tensor and an
    int64 ``(H, W)`` mask, augmented first when ``augment`` is given (seeded from torch, which
    the trainer seeds per epoch)."""
    if augment is not None:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
        image, mask = augment(image, mask, rng)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0), np.float32))
    x = normalize(x[None], spec.input.normalization)[0]
    return x, torch.from_numpy(np.ascontiguousarray(mask, np.int64))
