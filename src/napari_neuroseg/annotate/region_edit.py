"""One region of a :class:`~napari_neuroseg.annotate.labelstore.LabelStore` being edited."""

from __future__ import annotations

import threading

import numpy as np

from napari_neuroseg.annotate.labelstore import LabelStore
from napari_neuroseg.engine import Region

__all__ = ["RegionEdit"]


class RegionEdit:
    """One region being edited: snapshots taken on the GUI thread, commits in any thread.

    Each snapshot gets a version; a commit of an older version than the one last written
    is skipped, so an autosave finishing late never overwrites a newer commit.

    Parameters
    ----------
    store : LabelStore
    region : Region
    labels : numpy.ndarray, optional
        The labels as opened; :meth:`changed` compares with them (and with each snapshot),
        which catches edits that sent no event (napari's undo).
    """

    def __init__(self, store: LabelStore, region: Region,
                 labels: np.ndarray | None = None) -> None:
        self.store = store
        self.region = store.check_region(region)
        self.dirty = False
        self._baseline = None if labels is None else np.array(labels, copy=True)
        self._version = 0
        self._written = 0
        self._lock = threading.Lock()

    def mark_dirty(self) -> None:
        """Note that the labels changed since the last snapshot."""
        self.dirty = True

    def changed(self, labels: np.ndarray) -> bool:
        """Whether ``labels`` differ from the last snapshot (or the labels as opened)."""
        return self.dirty or (self._baseline is not None
                              and not np.array_equal(labels, self._baseline))

    def snapshot(self, labels: np.ndarray) -> tuple[int, np.ndarray]:
        """A versioned copy of ``labels`` to commit (clears :attr:`dirty`)."""
        self._version += 1
        self.dirty = False
        self._baseline = np.array(labels, copy=True)
        return self._version, self._baseline

    def commit(self, version: int, labels: np.ndarray,
               corrected_by_person: bool = True) -> bool:
        """Write a snapshot unless a newer one was written already; whether it was written."""
        with self._lock:
            if version <= self._written:
                return False
            self.store.commit(self.region, labels, corrected_by_person=corrected_by_person)
            self._written = version
            return True
