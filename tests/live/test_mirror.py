"""ChunkMirror: reads served from decoded recent chunks match the zarr store, evicted ones too."""

import numpy as np

from napari_neuroseg.engine import Region
from napari_neuroseg.live import ResultStore
from napari_neuroseg.live.mirror import ChunkMirror


def _write_random(store, rng, n, k):
    h, w = store.shape
    for _ in range(n):
        y, x = rng.integers(0, h - 40), rng.integers(0, w - 40)
        dy, dx = rng.integers(8, 40, size=2)
        probs = rng.random((k, dy, dx)).astype(np.float32)
        store.write(Region(y, x, y + dy, x + dx), probs, probs.argmax(axis=0))


def _assert_views_match_zarr(store, k):
    for level in range(store.n_levels):
        labels = store.labels_views()[level]
        np.testing.assert_array_equal(labels[:, :], np.asarray(store.array("labels", level)))
        for c in range(k):
            heat = store.heatmap_views(c)[level]
            stored = np.asarray(store.array("probabilities", level))[c] / np.float32(255)
            np.testing.assert_array_equal(heat[:, :], stored.astype(np.float32))
            np.testing.assert_array_equal(heat[3:17, 5:40], stored[3:17, 5:40])


def test_views_equal_the_stored_levels_after_overlapping_writes():
    rng = np.random.default_rng(1)
    with ResultStore((200, 170), 3, chunk=32, min_side=32) as store:
        _write_random(store, rng, 25, 3)
        assert store.mirror.misses == 0
        _assert_views_match_zarr(store, 3)
        assert store.mirror.misses == 0  # every written chunk still mirrored: no zarr read


def test_evicted_chunks_are_read_back_from_zarr_and_stay_exact():
    rng = np.random.default_rng(2)
    # room for two 32x32 probability chunks of 3 classes: most chunks get evicted
    with ResultStore((200, 170), 3, chunk=32, min_side=32, mirror_bytes=2 * 3 * 32 * 32) as store:
        _write_random(store, rng, 25, 3)
        assert store.mirror.nbytes <= 2 * 3 * 32 * 32 + 3 * 32 * 32
        _assert_views_match_zarr(store, 3)
        assert store.mirror.misses > 0


def test_never_written_chunks_read_as_zeros_without_zarr():
    mirror = ChunkMirror(16)

    def fallback(ys, xs):
        raise AssertionError("zarr read for a chunk nobody wrote")

    out = mirror.read("labels", 0, slice(5, 50), slice(0, 33), None, fallback)
    assert out.shape == (45, 33) and not out.any()


def test_partial_update_of_an_evicted_chunk_keeps_the_rest():
    mirror = ChunkMirror(4, max_bytes=16)  # one 4x4 uint8 chunk
    stored = np.zeros((8, 8), np.uint8)

    def write(ys, xs, value):
        stored[ys, xs] = value
        mirror.update("labels", 0, ys, xs, stored[ys, xs].copy(), (8, 8),
                      lambda a, b: stored[a, b])

    write(slice(0, 4), slice(0, 4), 1)
    write(slice(4, 8), slice(4, 8), 2)  # evicts chunk (0, 0)
    write(slice(0, 2), slice(0, 2), 3)  # reloads chunk (0, 0) from the store first
    got = mirror.read("labels", 0, slice(0, 8), slice(0, 8), None, lambda a, b: stored[a, b])
    np.testing.assert_array_equal(got, stored)
