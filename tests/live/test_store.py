"""ResultStore: sparse zarr levels, pyramid updates, geometry, bounded storage."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from napari_neuroseg.engine import Region
from napari_neuroseg.live import ResultStore


def _probs(h, w, k=3, seed=0):
    p = np.random.default_rng(seed).random((k, h, w)).astype(np.float32)
    return p / p.sum(axis=0, keepdims=True)


def test_levels_halve_exactly_and_are_placed_like_napari():
    with ResultStore((1000, 700), 3, scale=(2.0, 2.0), translate=(1.0, 5.0), chunk=64,
                     min_side=100) as store:
        f = 2 ** (store.n_levels - 1)
        assert store.level_shapes[0] == (1008, 704) and f == 16  # padded to a multiple of 16
        shapes = store.level_shapes
        assert all(a == 2 * b for s0, s1 in itertools.pairwise(shapes)
                   for a, b in zip(s0, s1, strict=True))
        assert max(store.level_shapes[-1]) <= 100
        scale, translate = store.level_geometry(2)
        assert scale == (8.0, 8.0)
        # a level-2 pixel covers working pixels 0..3: its centre is 1.5 working px further
        assert translate == pytest.approx((1.0 + 3.0, 5.0 + 3.0))


def test_write_then_read_every_level():
    with ResultStore((256, 256), 3, chunk=32, min_side=32) as store:
        probs = _probs(64, 64)
        labels = probs.argmax(axis=0).astype(np.uint8)
        store.write(Region(32, 64, 96, 128), probs, labels)
        got, got_labels = store.read(Region(32, 64, 96, 128))
        np.testing.assert_allclose(got, probs, atol=0.5 / 255 + 1e-6)
        np.testing.assert_array_equal(got_labels, labels)
        lab = store.labels_levels()
        heat = store.heatmap_levels(1)
        assert [tuple(a.shape) for a in lab] == store.level_shapes
        np.testing.assert_array_equal(np.asarray(lab[1][16:48, 32:64]), labels[::2, ::2])
        block = probs[1].reshape(32, 2, 32, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(np.asarray(heat[1][16:48, 32:64]), block, atol=1.5 / 255)
        assert heat[0].dtype == np.float32 and float(heat[0].max().compute()) <= 1.0
        assert np.asarray(lab[0][:32]).max() == 0  # never written: 0


def test_a_grid_within_one_chunk_still_has_two_levels():
    """A 1024 x 1536 µm slide at 10 µm/px: napari cannot show a one-level multiscale labels
    layer, nor switch a live layer to one, so the store keeps a second level."""
    with ResultStore((102, 154), 4) as store:
        assert store.level_shapes == [(102, 154), (51, 77)]
        probs = _probs(102, 154, k=4)
        labels = probs.argmax(axis=0).astype(np.uint8)
        store.write(Region(0, 0, 102, 154), probs, labels)
        lab = store.labels_views()
        assert [v.shape for v in lab] == store.level_shapes
        np.testing.assert_array_equal(lab[1][0:51, 0:77], labels[::2, ::2])


def test_unwritten_chunks_cost_nothing():
    with ResultStore((100_000, 100_000), 8, chunk=256) as store:
        before = store.nbytes_stored
        probs = _probs(256, 256, k=8)
        store.write(Region(50_000, 50_000, 50_256, 50_256), probs, probs.argmax(axis=0))
        # one chunk per level and class, compressed: far below one 100k x 100k level
        assert store.nbytes_stored - before < 8 * 2**20
        assert store.n_levels == 9


def test_float_storage_and_bad_shapes():
    with ResultStore((64, 64), 2, dtype="float16", chunk=32, min_side=32) as store:
        probs = _probs(32, 32, k=2)
        store.write(Region(0, 0, 32, 32), probs, probs.argmax(axis=0))
        np.testing.assert_allclose(store.read(Region(0, 0, 32, 32))[0], probs, atol=1e-3)
        with pytest.raises(ValueError, match="do not fit"):
            store.write(Region(0, 0, 16, 16), probs, probs.argmax(axis=0))
        with pytest.raises(ValueError, match="class 2"):
            store.heatmap_levels(2)


def test_close_deletes_the_temporary_directory():
    store = ResultStore((64, 64), 2)
    directory = store.directory
    assert directory.exists()
    store.close()
    assert not directory.exists()


def test_a_store_never_closed_is_deleted_when_python_exits(tmp_path):
    """napari quitting while a worker still holds the store must not leave it in /tmp."""
    import subprocess
    import sys

    code = ("from napari_neuroseg.live.store import ResultStore\n"
            "store = ResultStore((600, 600), 3)\n"
            "print(store.directory, flush=True)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    directory = Path(run.stdout.strip())
    assert directory.name.startswith("neuroseg-live-") and not directory.exists()


def test_views_read_like_the_dask_levels():
    with ResultStore((128, 128), 2, chunk=32, min_side=32) as store:
        probs = _probs(64, 64, k=2)
        store.write(Region(0, 0, 64, 64), probs, probs.argmax(axis=0))
        views, lazy = store.heatmap_views(1), store.heatmap_levels(1)
        assert views[0].shape == (128, 128) and views[0].dtype == np.float32
        np.testing.assert_array_equal(views[1][4:20, 0:30], np.asarray(lazy[1][4:20, 0:30]))
        np.testing.assert_array_equal(np.asarray(store.labels_views()[0]),
                                      np.asarray(store.labels_levels()[0]))
