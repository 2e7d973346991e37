"""In-memory and zarr aggregators, and label maps."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.engine.aggregate import (
    MemoryAggregator,
    ZarrAggregator,
    labels_from_probabilities,
)
from napari_neuroseg.engine.errors import EngineError


def _fill(agg):
    """Two overlapping 2-channel tiles, one partly outside, with weights on one."""
    agg.aggregate(np.full((2, 4, 4), 1.0), (8, 8))  # origin (10, 10): clipped to 2x2
    agg.aggregate(np.full((2, 4, 4), 3.0), (10, 10), np.full((4, 4), 3.0, np.float32))
    agg.aggregate(np.full((2, 2, 2), 5.0), (100, 100))  # fully outside: ignored
    return agg.finalize()


def _expected():
    out = np.zeros((2, 6, 6), np.float32)
    out[:, :4, :4] = 3.0
    out[:, :2, :2] = (1 * 1 + 3 * 3) / 4
    return out


def test_memory_aggregator_weighted_mean_and_clipping():
    agg = MemoryAggregator(2, (6, 6), origin=(10, 10))
    np.testing.assert_allclose(_fill(agg), _expected())
    covered = agg.covered
    assert covered[:4, :4].all() and not covered[4:].any() and not covered[:, 4:].any()


def test_zarr_aggregator_matches_memory(tmp_path):
    agg = ZarrAggregator(tmp_path / "out.zarr", 2, (6, 6), origin=(10, 10), chunk=4)
    result = _fill(agg)
    np.testing.assert_allclose(result[...], _expected())
    np.testing.assert_array_equal(agg.covered.compute(), _expected()[0] > 0)


def test_zarr_aggregator_writes_only_touched_chunks(tmp_path):
    agg = ZarrAggregator(tmp_path / "big.zarr", 1, (4096, 4096), chunk=256)
    agg.aggregate(np.ones((1, 10, 10)), (300, 300))
    values = agg.finalize()
    assert values.nchunks_initialized == 1
    assert values[0, 305, 305] == 1.0 and values[0, 0, 0] == 0.0


def test_zarr_aggregator_3d_and_refuses_existing_path(tmp_path):
    path = tmp_path / "vol.zarr"
    agg = ZarrAggregator(path, 1, (3, 8, 8), chunk=4)
    agg.aggregate(np.full((1, 1, 8, 8), 2.0), (1, 0, 0))
    values = da.from_zarr(agg.finalize()).compute()
    assert values[0, 1].min() == 2.0 and values[0, [0, 2]].max() == 0.0
    with pytest.raises(EngineError, match="already exists"):
        ZarrAggregator(path, 1, (3, 8, 8))
    ZarrAggregator(path, 1, (3, 8, 8), overwrite=True)


def test_finalize_is_idempotent_and_final():
    agg = MemoryAggregator(1, (2, 2))
    agg.aggregate(np.full((1, 2, 2), 4.0), (0, 0), np.full((2, 2), 2.0, np.float32))
    first = agg.finalize().copy()
    np.testing.assert_array_equal(agg.finalize(), first)
    assert first[0, 0, 0] == 4.0
    with pytest.raises(EngineError, match="finalized"):
        agg.aggregate(np.ones((1, 2, 2)), (0, 0))


def test_aggregator_checks_shapes():
    agg = MemoryAggregator(2, (4, 4))
    with pytest.raises(EngineError, match=r"expected values of shape \(2"):
        agg.aggregate(np.ones((3, 2, 2)), (0, 0))
    with pytest.raises(EngineError, match="weights"):
        agg.aggregate(np.ones((2, 2, 2)), (0, 0), np.ones((3, 3), np.float32))
    with pytest.raises(EngineError, match="at least one output"):
        MemoryAggregator(0, (4, 4))


def test_labels_argmax_threshold_and_lazy():
    probs = np.array([[[0.7, 0.2]], [[0.3, 0.8]]], np.float32)  # K=2, 1x2
    np.testing.assert_array_equal(labels_from_probabilities(probs), [[0, 1]])
    np.testing.assert_array_equal(labels_from_probabilities(probs, 0.9), [[0, 0]])
    one = probs[1:]
    np.testing.assert_array_equal(labels_from_probabilities(one), [[0, 1]])
    np.testing.assert_array_equal(labels_from_probabilities(one, 0.25), [[1, 1]])
    lazy = labels_from_probabilities(da.from_array(np.concatenate([probs, probs * 0.1])))
    assert isinstance(lazy, da.Array)
    assert lazy.dtype == np.uint8
    np.testing.assert_array_equal(lazy.compute(), [[0, 1]])


def test_zarr_buffer_eviction_gives_the_memory_result(tmp_path):
    rng = np.random.default_rng(5)
    memory = MemoryAggregator(3, (100, 90), origin=(-5, 0))
    # a 4-chunk buffer of 16 x 16 chunks: most chunks get written out and read back
    zarr_agg = ZarrAggregator(
        tmp_path / "z.zarr",
        3,
        (100, 90),
        origin=(-5, 0),
        chunk=16,
        buffer_bytes=4 * 4 * 16 * 16 * 4,
    )
    for _ in range(30):
        values = rng.random((3, 24, 24)).astype(np.float32)
        weights = rng.random((24, 24)).astype(np.float32) + 0.1
        location = tuple(int(v) for v in rng.integers(-20, 100, 2))
        memory.aggregate(values, location, weights)
        zarr_agg.aggregate(values, location, weights)
        assert sum(t.nbytes + w.nbytes for t, w in zarr_agg._buffer.values()) <= 4 * 4 * 1024
    np.testing.assert_allclose(zarr_agg.finalize()[...], memory.finalize(), rtol=1e-5)
    np.testing.assert_array_equal(zarr_agg.covered.compute(), memory.covered)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_labels_equal_numpy_argmax_with_ties_to_the_first_class(k):
    rng = np.random.default_rng(k)
    probs = rng.integers(0, 4, (k, 40, 50)).astype(np.float32)  # many ties
    probs[:, :3, :3] = 0  # uncovered pixels
    labels = labels_from_probabilities(probs)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probs.argmax(axis=0))
    np.testing.assert_array_equal(labels_from_probabilities(da.from_array(probs)).compute(),
                                  labels)
