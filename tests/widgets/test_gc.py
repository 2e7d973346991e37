"""GcFreeze: a counted, process-wide gc.freeze() for live analysis."""

import gc
import weakref

from napari_neuroseg.widgets._gc import GcFreeze


def test_first_hold_freezes_and_last_release_unfreezes():
    assert GcFreeze.holders() == 0 and gc.get_freeze_count() == 0
    first = GcFreeze()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    second = GcFreeze()
    first.release()
    first.release()  # idempotent: the second hold still keeps the freeze
    assert GcFreeze.holders() == 1 and gc.get_freeze_count() >= frozen
    second.release()
    assert GcFreeze.holders() == 0 and gc.get_freeze_count() == 0


class Node:
    """A weak-referenceable object to put in a reference cycle."""


def test_objects_made_while_frozen_are_still_collected():
    hold = GcFreeze()
    try:
        node = Node()
        node.self = node  # a cycle: only the cyclic collector frees it
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is None
    finally:
        hold.release()
