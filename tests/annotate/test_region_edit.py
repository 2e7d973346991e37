"""A region being edited: versioned snapshots, late autosaves skipped, edits without events."""

import numpy as np
import pytest

from napari_neuroseg.annotate.labelstore import LabelStore
from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS
from napari_neuroseg.annotate.region_edit import RegionEdit
from napari_neuroseg.engine import Region


@pytest.fixture
def store(tmp_path):
    lgg = STANDARD_CLASS_MAPS["LGG tissue (4 classes)"]
    return LabelStore.create(tmp_path / "s", (64, 64), lgg)


def test_region_edit_never_writes_an_older_snapshot(store):
    r = Region(0, 0, 32, 32)
    edit = RegionEdit(store, r)
    edit.mark_dirty()
    v1, old = edit.snapshot(np.ones(r.shape, np.uint8))
    assert not edit.dirty
    v2, new = edit.snapshot(np.full(r.shape, 2, np.uint8))
    assert edit.commit(v2, new)
    assert not edit.commit(v1, old)  # a late autosave of older labels is skipped
    assert (store.read(r) == 2).all()


def test_region_edit_sees_changes_without_events(store):
    r = Region(0, 0, 8, 8)
    opened = np.ones(r.shape, np.uint8)
    edit = RegionEdit(store, r, opened)
    assert not edit.changed(opened.copy())  # seeded labels, untouched: nothing to save
    painted = opened.copy()
    painted[0, 0] = 2
    assert edit.changed(painted)  # e.g. an undo, which sends no paint event
    edit.commit(*edit.snapshot(painted))
    assert not edit.changed(painted) and edit.changed(opened)
