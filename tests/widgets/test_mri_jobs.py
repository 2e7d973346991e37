"""The MRI widget's worker functions, without Qt: clean-up with the user's edits, stopping."""

import threading
from types import SimpleNamespace

import numpy as np

from napari_neuroseg.widgets._mri_jobs import cleanup_and_measure, segment_stack


def _raw():
    raw = np.zeros((4, 16, 16), np.uint8)
    raw[0:3, 4:10, 4:10] = 1  # a lesion over three slices
    raw[3, 0:2, 0:2] = 1  # a speck on one slice
    return raw


def test_cleanup_drops_single_slice_specks_and_measures_in_ml():
    out = cleanup_and_measure(_raw(), min_size=0.0, size_unit="voxels", drop_single_slice=True,
                              scale=(1.0, 1.0, 1.0), unit="mm")
    assert out["voxels"] == 3 * 36 and out["min_voxels"] == 0
    assert out["ml"] == 3 * 36 / 1000 and out["raw_ml"] == (3 * 36 + 4) / 1000
    assert out["cleanup"].n_single_slice == 1


def test_cleanup_keeps_what_the_user_painted_whatever_the_options():
    raw = _raw()
    current = raw.copy()
    current[3, 0:2, 0:2] = 1
    edited = np.zeros(raw.shape, bool)
    edited[3, 0:2, 0:2] = True  # the user confirmed the speck
    out = cleanup_and_measure(raw, min_size=50, size_unit="voxels", drop_single_slice=True,
                              scale=(1.0, 1.0, 1.0), unit="mm", current=current, edited=edited)
    assert out["cleanup"].labels[3, 0:2, 0:2].all()
    assert out["voxels"] == 3 * 36 + 4


def test_segment_stack_yields_the_model_then_stops_when_asked():
    stop = threading.Event()
    stop.set()
    spec = SimpleNamespace(name="stand-in")
    image = SimpleNamespace(shape=(4, 16, 16, 3))
    items = list(segment_stack(image, "source", lambda source: (None, spec), stop))
    assert items == [("model", spec)]
