"""Tiles for the ``nuclei-tiles`` task: labelled dataset items, the unlabelled pool, torch sets.

A :class:`TileSource` is a list of ``tile_size`` squares cut from images (dataset items or
image files), read on demand as RGB uint8. The labelled tiles are the dataset's items, one
square each (they must be exactly ``tile_size``); the unlabelled pool for pseudo-labelling
(:func:`unlabelled_pool`) is a folder of images or a dataset in the export layout whose labels
are ignored, each image cut into non-overlapping squares (edge remainders dropped, as
:func:`napari_neuroseg.dataset.convert_nuclei_tiles` does). :class:`TileData` serves
``(tile, label, index)`` triples, normalised as the model spec says, for the Trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.runner import normalize
from napari_neuroseg.models.spec import ModelSpec
from training.augment import tile_augment
from training.tasks._common import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "TileData",
    "TileSource",
    "as_rgb_uint8",
    "check_tile_shapes",
    "files_pool",
    "join_sources",
    "labelled_tiles",
    "make_augment",
    "make_pool",
    "split_test_pool",
    "unlabelled_pool",
]

#: Image files an unlabelled folder may hold (read with Pillow, converted to RGB).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def as_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 view of a grey, RGB or RGBA uint8 image.

    Raises
    ------
    DataError
        Another dtype or channel count (names ``where``).
    """
    if image.dtype != np.uint8:
        raise DataError(f"{where}: the nuclei-tiles task needs 8-bit RGB tiles, got "
                        f"{image.dtype}; convert the tiles to uint8 first")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., :3]
    raise DataError(f"{where}: expected a grey, RGB or RGBA image, got shape {image.shape}")


class TileSource:
    """``tile_size`` squares cut from images that are read on demand.

    Parameters
    ----------
    keys : sequence of str
        One key per image (an item id or a file name).
    shapes : sequence of tuple of int
        ``(height, width)`` of each image.
    read : callable
        ``read(key) -> np.ndarray`` (any of grey/RGB/RGBA uint8).
    tile_size : int
    name : str
        Where the tiles come from, for messages.

    Notes
    -----
    Squares are laid out row by row from the top-left corner of each image; remainders at the
    right and bottom edges are dropped. The last image read is kept, so reading the squares
    of one image in order decodes it once.
    """

    def __init__(self, keys: Sequence[str], shapes: Sequence[tuple[int, int]],
                 read: Callable[[str], np.ndarray], tile_size: int, name: str) -> None:
        self.keys, self.read, self.tile_size, self.name = list(keys), read, int(tile_size), name
        self.tiles: list[tuple[int, int, int]] = []
        for k, (height, width) in enumerate(shapes):
            for y in range(0, height - tile_size + 1, tile_size):
                for x in range(0, width - tile_size + 1, tile_size):
                    self.tiles.append((k, y, x))
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.tiles)

    def tile_id(self, i: int) -> str:
        """``key`` for a whole-image tile, else ``key@y,x``."""
        k, y, x = self.tiles[i]
        return self.keys[k] if (y, x) == (0, 0) else f"{self.keys[k]}@{y},{x}"

    def read_tile(self, i: int) -> np.ndarray:
        """Square ``i`` as ``(tile_size, tile_size, 3)`` uint8."""
        k, y, x = self.tiles[i]
        if self._cached is None or self._cached[0] != k:
            self._cached = (k, as_rgb_uint8(self.read(self.keys[k]), f"{self.name}: "
                                                                      f"{self.keys[k]}"))
        size = self.tile_size
        return self._cached[1][y:y + size, x:x + size]


def check_tile_shapes(data: Dataset, tile_size: int, indices: Sequence[int] | None = None
                      ) -> None:
    """Refuse labelled items that are not ``tile_size`` squares with 1, 3 or 4 channels.

    Raises
    ------
    DataError
        Names up to five offending items and how to fix them.
    """
    items = data.items if indices is None else [data.items[int(i)] for i in indices]
    bad = [f"{item.id} {tuple(item.shape)}" for item in items
           if tuple(item.shape[:2]) != (tile_size, tile_size)
           or (len(item.shape) == 3 and item.shape[2] not in (1, 3, 4))]
    if bad:
        raise DataError(
            f"{data.path}: {len(bad)} item(s) are not {tile_size}x{tile_size} RGB tiles "
            f"(e.g. {', '.join(bad[:5])}); convert with tile_size={tile_size}, or set "
            "input_size in --config to the tile size of the data")


def labelled_tiles(data: Dataset, indices: Sequence[int], tile_size: int) -> TileSource:
    """The dataset items ``indices`` as one tile each (see :func:`check_tile_shapes`)."""
    items = [data.items[int(i)] for i in indices]
    return TileSource([item.id for item in items], [tuple(item.shape[:2]) for item in items],
                      data.read_image, tile_size, str(data.path))


def split_test_pool(data: Dataset, tile_size: int) -> TileSource:
    """The items marked ``split: "test"`` as unlabelled tiles (their labels are ignored)."""
    indices = [i for i, item in enumerate(data.items) if item.split == "test"]
    return _dataset_pool(data, indices, tile_size)


def _dataset_pool(data: Dataset, indices: Sequence[int], tile_size: int) -> TileSource:
    items = [data.items[i] for i in indices]
    small = [item.id for item in items if min(item.shape[:2]) < tile_size]
    if small:
        raise DataError(f"{data.path}: unlabelled images smaller than {tile_size}x{tile_size}: "
                        f"{', '.join(small[:5])}")
    return TileSource([item.id for item in items], [tuple(item.shape[:2]) for item in items],
                      data.read_image, tile_size, f"{data.path} (unlabelled)")


def _read_file(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from err


class _FolderReader:
    """``read(name)`` of an image file in ``root`` (a class, so DataLoader workers can pickle
    it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str) -> np.ndarray:
        return _read_file(str(self.root / name))


def _file_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from err


def unlabelled_pool(path: str | Path, tile_size: int, *, exclude: Path | None = None
                    ) -> TileSource:
    """Unlabelled tiles from a dataset folder (labels ignored) or a folder of image files.

    Parameters
    ----------
    path : str or pathlib.Path
        A dataset in the export layout (a ``manifest.json`` inside; any task, RGB images), or a
        folder whose files ending in :data:`IMAGE_SUFFIXES` (not recursive, sorted by name)
        are the images.
    tile_size : int
        Each image is cut into ``tile_size`` squares; smaller images are refused.
    exclude : pathlib.Path, optional
        The labelled dataset: pointing the pool at it would pseudo-label the validation tiles.

    Raises
    ------
    DataError
        No such folder, the labelled dataset itself, no images, an unreadable or too small
        image.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"unlabeled: {root} is not a folder")
    if exclude is not None and root.resolve() == Path(exclude).resolve():
        raise DataError(f"unlabeled: {root} is the labelled dataset itself; mark its unlabelled "
                        "items split: test and set unlabeled_test_items: true instead")
    if (root / "manifest.json").is_file():
        data = Dataset.open(root, check_pixels=False)
        return _dataset_pool(data, range(len(data.items)), tile_size)
    files = sorted(p for p in root.iterdir() if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"unlabeled: {root} holds no images ({', '.join(IMAGE_SUFFIXES)}) and "
                        "no manifest.json")
    return files_pool(root, [p.name for p in files], tile_size, str(root))


def files_pool(root: Path, names: Sequence[str], tile_size: int, name: str) -> TileSource:
    """Unlabelled tiles from image files ``root / names[k]`` (paths relative to ``root``).

    Raises
    ------
    DataError
        An unreadable image or one smaller than ``tile_size``.
    """
    root = Path(root)
    shapes = [_file_size(root / n) for n in names]
    small = [n for n, s in zip(names, shapes, strict=True) if min(s) < tile_size]
    if small:
        raise DataError(f"unlabeled: {name}: images smaller than {tile_size}x{tile_size}: "
                        f"{', '.join(small[:5])}")
    return TileSource(list(names), shapes, _FolderReader(root), tile_size, name)


class _JoinedReader:
    """``read(key)`` for :func:`join_sources` (a class, so DataLoader workers can pickle it)."""

    def __init__(self, readers: dict[str, tuple[Callable[[str], np.ndarray], str]]) -> None:
        self.readers = readers

    def __call__(self, key: str) -> np.ndarray:
        read, inner = self.readers[key]
        return read(inner)


def join_sources(sources: Sequence[TileSource], tile_size: int, name: str = "pool"
                 ) -> TileSource:
    """One source holding the tiles of ``sources`` in order (keys become ``"n:key"``)."""
    readers: dict[str, tuple[Callable[[str], np.ndarray], str]] = {}
    tiles: list[tuple[int, int, int]] = []
    for n, source in enumerate(sources):
        offset = len(readers)
        readers.update({f"{n}:{key}": (source.read, key) for key in source.keys})
        tiles += [(k + offset, y, x) for k, y, x in source.tiles]
    joined = TileSource(list(readers), [], _JoinedReader(readers), tile_size, name)
    joined.tiles = tiles
    return joined


def make_pool(data: Dataset, tile_size: int, unlabeled: str | None, test_items: bool,
              extra: TileSource | None = None) -> TileSource | None:
    """The unlabelled pool: ``extra`` (the unlabelled tiles of a ``labels.csv`` folder), the
    ``unlabeled`` folder and/or the ``split: "test"`` items.

    Returns
    -------
    TileSource or None
        None when neither is asked for.

    Raises
    ------
    DataError
        The folder is unusable (:func:`unlabelled_pool`), test items are asked for but there
        are none, or no tile can be cut.
    """
    sources = [] if extra is None or not len(extra) else [extra]
    if unlabeled:
        sources.append(unlabelled_pool(unlabeled, tile_size, exclude=data.path))
    if test_items:
        test = split_test_pool(data, tile_size)
        if not len(test):
            raise DataError(f"{data.path}: unlabeled_test_items is set but no item has "
                            "split: test")
        sources.append(test)
    if not sources:
        return None
    pool = sources[0] if len(sources) == 1 else join_sources(sources, tile_size)
    if not len(pool):
        raise DataError(f"unlabeled: no {tile_size}x{tile_size} tile can be cut from "
                        f"{pool.name}")
    return pool


class TileData(TorchDataset):
    """``(tile, label, index)`` triples for training and evaluation.

    Parameters
    ----------
    entries : sequence of (TileSource, int, int)
        The source, the tile's index in it and its label (a pseudo-label for pool tiles;
        any value, e.g. -1, when only predicting).
    spec : ModelSpec
        Gives the normalisation (applied after augmentation).
    augment : callable, optional
        A :func:`training.augment.tile_augment` pipeline, or None.

    Notes
    -----
    The tile is ``(3, H, W)`` float32 normalised as the spec says, the label an int64 scalar,
    the index the position in ``entries``. Augmentation draws from a generator seeded from
    torch's RNG, which the Trainer reseeds every epoch (and DataLoader workers per worker).
    """

    def __init__(self, entries: Sequence[tuple[TileSource, int, int]], spec: ModelSpec,
                 augment: Callable | None = None) -> None:
        self.entries, self.spec, self.augment = list(entries), spec, augment

    @classmethod
    def from_source(cls, source: TileSource, labels: Sequence[int] | None, spec: ModelSpec,
                    augment: Callable | None = None) -> TileData:
        """All tiles of ``source`` with ``labels`` (default -1: unknown)."""
        labels = [-1] * len(source) if labels is None else list(labels)
        return cls([(source, i, int(y)) for i, y in enumerate(labels)], spec, augment)

    def __len__(self) -> int:
        return len(self.entries)

    def labels(self) -> np.ndarray:
        """The labels of all entries (int64)."""
        return np.fromiter((e[2] for e in self.entries), dtype=np.int64, count=len(self))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        source, k, label = self.entries[i]
        tile = source.read_tile(k)
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
            tile, _ = self.augment(tile, None, rng)
        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1), np.float32))
        x = normalize(x[None], self.spec.input.normalization)[0]
        return x, torch.tensor(label, dtype=torch.int64), i


def make_augment(enabled: bool, affine_p: float, jitter_p: float, cutout_p: float,
                 cutout: bool) -> Callable | None:
    """The LeNet nuclei-tile recipe's tile augmentation
    (:func:`training.augment.tile_augment`), or None."""
    if not enabled:
        return None
    return tile_augment(affine_p=affine_p, jitter_p=jitter_p, cutout_p=cutout_p, cutout=cutout)
