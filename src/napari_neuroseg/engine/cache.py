"""Tile result cache: an LRU in memory bounded by bytes, optionally backed by zarr on disk.

An entry is one tile's predictor output (halo already cropped), keyed by a :class:`TileKey`:
the image, pyramid level, model, preprocessing, grid geometry and the tile's ``(z, row, col)``.
A different model or preprocessing key never matches old entries, and :meth:`TileCache.
invalidate` drops exactly the entries of one image, model or preprocessing key.

The disk store makes batch runs resumable: a tile is written as its own zarr array and marked
complete only after its data is written, so an interrupted run recomputes at most the tile
it was writing. Several processes (dask.distributed workers) may share one store: the group is
created race-free, and each tile is written beside the store and renamed into it in one step,
so a reader never sees a tile being written or replaced.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr
from zarr.errors import ContainsGroupError


@dataclass(frozen=True)
class CacheKey:
    """What a prediction's tiles depend on, apart from the tile itself.

    Parameters
    ----------
    image : str
        Identifies the pixels (e.g. the file path plus a modification time or a hash).
    model : str
        Identifies the model and its weights (e.g. spec name plus checkpoint hash).
    preprocess : str
        Identifies the preprocessing chain and its parameters ("" = none).
    level : int
        Pyramid level (or any other resolution index) the tiles were read from.
    """

    image: str
    model: str
    preprocess: str = ""
    level: int = 0


class TileKey(NamedTuple):
    """Full key of one cached tile."""

    image: str
    level: int
    model: str
    preprocess: str
    grid: tuple[Any, ...]
    tile: tuple[int | None, int, int]

    @classmethod
    def make(
        cls, key: CacheKey, grid: tuple[Any, ...], tile: tuple[int | None, int, int]
    ) -> TileKey:
        """Combine a :class:`CacheKey`, a grid description and a tile's ``(z, row, col)``."""
        return cls(key.image, key.level, key.model, key.preprocess, tuple(grid), tuple(tile))

    def digest(self) -> str:
        """A stable file-system-safe name for this key."""
        return hashlib.sha1(repr(tuple(self)).encode(), usedforsecurity=False).hexdigest()


def _matches(key: TileKey, criteria: dict[str, Any]) -> bool:
    return all(getattr(key, name) == value for name, value in criteria.items())


class TileCache:
    """Thread-safe LRU of tile outputs, bounded by bytes, with an optional zarr store.

    Parameters
    ----------
    max_bytes : int
        Memory budget for cached arrays; the least recently used entries are evicted beyond it.
        An entry larger than the budget is not kept in memory (but still goes to disk).
    directory : str or Path, optional
        A zarr group (created when missing) where every entry is also written. Entries found
        there are served (and moved into memory) by later runs, including in new processes.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, directory: str | Path | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._memory: OrderedDict[TileKey, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self._group = None
        if self.directory is not None:
            self._group = open_shared_group(self.directory)
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._memory)

    def get(self, key: TileKey) -> np.ndarray | None:
        """The cached (read-only) array for ``key``, or None."""
        with self._lock:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
            else:
                value = self._read_disk(key)
                if value is not None:
                    self._remember(key, value)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: TileKey, values: np.ndarray) -> None:
        """Store a copy of ``values`` under ``key`` (in memory, and on disk when configured)."""
        value = np.array(values, copy=True)
        value.flags.writeable = False
        with self._lock:
            self._remember(key, value)
            self._write_disk(key, value)

    def invalidate(self, **criteria: Any) -> int:
        """Drop every entry whose key fields equal ``criteria`` (memory and disk).

        Parameters
        ----------
        **criteria
            Fields of :class:`TileKey`, e.g. ``model="lgg-tissue@abc"`` or ``image=...,
            preprocess=...``. No criteria clears everything.

        Returns
        -------
        int
            Number of distinct keys dropped (from memory, disk or both).
        """
        unknown = set(criteria) - set(TileKey._fields)
        if unknown:
            raise ValueError(f"unknown cache key fields {sorted(unknown)}; use {TileKey._fields}")
        with self._lock:
            dropped = [k for k in self._memory if _matches(k, criteria)]
            for k in dropped:
                self._nbytes -= self._memory.pop(k).nbytes
            return len(set(dropped) | self._invalidate_disk(criteria))

    def _remember(self, key: TileKey, value: np.ndarray) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        if value.nbytes > self.max_bytes:
            return
        self._memory[key] = value
        self._nbytes += value.nbytes
        while self._nbytes > self.max_bytes:
            _, evicted = self._memory.popitem(last=False)
            self._nbytes -= evicted.nbytes

    def _read_disk(self, key: TileKey) -> np.ndarray | None:
        if self._group is None:
            return None
        try:
            array = zarr.open_array(str(self.directory / key.digest()), mode="r")
        except FileNotFoundError:
            return None
        if not array.attrs.get("complete", False):
            return None
        value = np.asarray(array[...])
        value.flags.writeable = False
        return value

    def _write_disk(self, key: TileKey, value: np.ndarray) -> None:
        if self._group is None:
            return
        final = self.directory / key.digest()
        staging = self.directory.with_name(f".{self.directory.name}.{uuid.uuid4().hex}")
        array = zarr.create_array(
            str(staging), shape=value.shape, dtype=value.dtype, chunks=value.shape or None
        )
        array[...] = value
        array.attrs.update({"key": _jsonable(key), "complete": True})
        try:
            os.rename(staging, final)
            return
        except OSError:  # already there: written by another process, or an old partial entry
            pass
        if self._read_disk(key) is not None:  # the same key gives the same values: keep it
            shutil.rmtree(staging, ignore_errors=True)
            return
        trash = staging.with_name(staging.name + ".old")
        try:
            os.rename(final, trash)
        except FileNotFoundError:
            pass
        try:
            os.rename(staging, final)
        except OSError:  # another writer won the swap; its entry is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)

    def _invalidate_disk(self, criteria: dict[str, Any]) -> set[TileKey]:
        if self._group is None:
            return set()
        found: dict[str, TileKey] = {}
        for name, array in self._group.arrays():
            stored = array.attrs.get("key")
            if stored is not None and _matches(_from_json(stored), criteria):
                found[name] = _from_json(stored)
        for name in found:
            del self._group[name]
        return set(found.values())


def open_shared_group(path: str | Path, attempts: int = 20) -> zarr.Group:
    """Open the zarr group at ``path``, creating it when missing, safely across processes.

    ``zarr.open_group(mode="a")`` checks, then creates: when two processes do that at once, the
    slower one fails with "a group exists". Here the creation is exclusive and a loser simply
    opens what the winner made.

    Parameters
    ----------
    path : str or Path
        Directory of the group.
    attempts : int
        How many open-or-create rounds to try before giving up (a group whose metadata is being
        written at that instant cannot be opened yet).

    Returns
    -------
    zarr.Group
        The group, opened read-write.
    """
    path = str(path)
    for attempt in range(attempts):
        try:
            return zarr.open_group(path, mode="r+")
        except (FileNotFoundError, ValueError):  # missing, or metadata half written
            pass
        try:
            return zarr.open_group(path, mode="w-")
        except (FileExistsError, ContainsGroupError):
            time.sleep(0.01 * (attempt + 1))
    return zarr.open_group(path, mode="r+")


def _jsonable(key: TileKey) -> list[Any]:
    return [key.image, key.level, key.model, key.preprocess, list(key.grid), list(key.tile)]


def _from_json(stored: list[Any]) -> TileKey:
    image, level, model, preprocess, grid, tile = stored
    return TileKey(image, level, model, preprocess, tuple(grid), tuple(tile))
