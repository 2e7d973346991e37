"""Instance edits on small arrays: delete, merge, split (line, watershed), add, relabel."""

import numpy as np
import pytest

from napari_neuroseg.annotate.instances import (
    add_instance,
    delete_instances,
    instance_ids,
    instance_on_line,
    merge_instances,
    next_id,
    relabel_compact,
    split_instance_along_line,
    split_instance_watershed,
)


@pytest.fixture
def labels():
    """Three instances: 3 (a square), 7 (a square), 9 (two touching discs = a dumbbell)."""
    out = np.zeros((40, 60), dtype=np.uint32)
    out[2:8, 2:8] = 3
    out[2:8, 12:18] = 7
    yy, xx = np.mgrid[:40, :60]
    out[((yy - 25) ** 2 + (xx - 20) ** 2 <= 36) | ((yy - 25) ** 2 + (xx - 31) ** 2 <= 36)] = 9
    return out


def test_ids_and_next_id(labels):
    assert instance_ids(labels) == [3, 7, 9]
    assert next_id(labels) == 10
    assert next_id(np.zeros((4, 4), np.uint16)) == 1


def test_delete_leaves_input_alone(labels):
    before = labels.copy()
    out = delete_instances(labels, [3, 9])
    np.testing.assert_array_equal(labels, before)
    assert instance_ids(out) == [7]
    assert (out[labels == 7] == 7).all()
    with pytest.raises(ValueError, match="no instance with id 5"):
        delete_instances(labels, [5])
    with pytest.raises(ValueError, match="ids > 0"):
        delete_instances(labels, [0])


def test_merge(labels):
    out = merge_instances(labels, [7, 3])
    assert instance_ids(out) == [3, 9]
    assert (out == 3).sum() == (labels == 3).sum() + (labels == 7).sum()
    out = merge_instances(labels, [3, 7, 9], into=20)
    assert instance_ids(out) == [20]
    with pytest.raises(ValueError, match="two or more"):
        merge_instances(labels, [3])


def test_add_uses_next_free_id(labels):
    mask = np.zeros(labels.shape, bool)
    mask[30:35, 50:55] = True
    out, new = add_instance(labels, mask)
    assert new == 10 and (out[mask] == 10).all() and instance_ids(out) == [3, 7, 9, 10]
    with pytest.raises(ValueError, match="empty"):
        add_instance(labels, np.zeros(labels.shape, bool))


def test_relabel_compact(labels):
    out, mapping = relabel_compact(labels)
    assert mapping == {3: 1, 7: 2, 9: 3}
    assert instance_ids(out) == [1, 2, 3] and out.dtype == labels.dtype
    np.testing.assert_array_equal(out > 0, labels > 0)


def test_split_along_line(labels):
    # a vertical cut through the dumbbell's waist (x = 25), drawn shorter than the object
    line = [(23.0, 25.4), (27.0, 25.4)]
    assert instance_on_line(labels, line) == 9
    out, new = split_instance_along_line(labels, 9, line)
    assert new == 10
    left, right = out == 9, out == 10
    assert left.sum() > 50 and right.sum() > 50
    np.testing.assert_array_equal(left | right, labels == 9)  # no pixel lost, the cut included
    parts = sorted((np.nonzero(left)[1], np.nonzero(right)[1]), key=np.mean)
    assert parts[0].max() <= 25 < parts[1].min()  # separated at the line (column 25)
    assert left.sum() >= right.sum()  # the larger part keeps id 9
    assert (out[labels != 9] == labels[labels != 9]).all()


def test_split_along_line_that_misses(labels):
    with pytest.raises(ValueError, match="does not cut instance 3"):
        split_instance_along_line(labels, 3, [(30.0, 40.0), (30.0, 50.0)])


def test_split_watershed_dumbbell(labels):
    out, _ = split_instance_watershed(labels, 9, new_id=42)
    a, b = out == 9, out == 42
    np.testing.assert_array_equal(a | b, labels == 9)
    # each disc mostly in one part: the split follows the waist
    cx_a, cx_b = np.nonzero(a)[1].mean(), np.nonzero(b)[1].mean()
    assert abs(cx_a - cx_b) > 8
    assert abs(a.sum() - b.sum()) < 0.2 * (labels == 9).sum()


def test_split_watershed_convex_falls_back_to_halves(labels):
    out, new = split_instance_watershed(labels, 3)
    assert new == 10
    assert (out == 3).sum() == 18 and (out == 10).sum() == 18
