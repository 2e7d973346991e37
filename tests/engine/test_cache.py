"""Tile cache: LRU by bytes, zarr persistence, keys and invalidation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zarr

from napari_neuroseg.engine.cache import CacheKey, TileCache, TileKey

GRID = (64, 64, 8, 0, "dense")


def key(row: int, model: str = "m1", preprocess: str = "", image: str = "img") -> TileKey:
    return TileKey.make(CacheKey(image, model, preprocess, level=0), GRID, (None, row, 0))


def arr(value: float, n: int = 256) -> np.ndarray:
    return np.full(n, value, np.float32)  # 1 KiB


def test_get_put_roundtrip_returns_read_only_copy():
    cache = TileCache()
    values = arr(1.0)
    cache.put(key(0), values)
    values[:] = 5.0  # the cache kept its own copy
    got = cache.get(key(0))
    assert got is not None and (got == 1.0).all()
    assert not got.flags.writeable
    assert cache.get(key(1)) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_lru_evicts_least_recently_used_beyond_the_byte_budget():
    cache = TileCache(max_bytes=3 * 1024)
    for row in range(3):
        cache.put(key(row), arr(row))
    assert cache.nbytes == 3 * 1024
    cache.get(key(0))  # 0 is now the most recent
    cache.put(key(3), arr(3))
    assert cache.get(key(1)) is None
    assert all(cache.get(key(r)) is not None for r in (0, 2, 3))
    assert len(cache) == 3 and cache.nbytes <= cache.max_bytes


def test_entry_larger_than_budget_is_not_kept_in_memory():
    cache = TileCache(max_bytes=100)
    cache.put(key(0), arr(1.0))
    assert len(cache) == 0 and cache.nbytes == 0


def test_keys_differ_by_model_preprocessing_level_and_grid():
    base = CacheKey("img", "m1", "macenko", level=1)
    k = TileKey.make(base, GRID, (None, 0, 0))
    assert k != TileKey.make(CacheKey("img", "m2", "macenko", 1), GRID, (None, 0, 0))
    assert k != TileKey.make(CacheKey("img", "m1", "", 1), GRID, (None, 0, 0))
    assert k != TileKey.make(CacheKey("img", "m1", "macenko", 0), GRID, (None, 0, 0))
    assert k != TileKey.make(base, (64, 64, 16, 0, "dense"), (None, 0, 0))
    assert k.digest() == TileKey.make(base, GRID, (None, 0, 0)).digest()


def test_invalidate_drops_only_matching_entries():
    cache = TileCache()
    for row in range(3):
        cache.put(key(row, model="m1"), arr(row))
        cache.put(key(row, model="m2"), arr(row))
    assert cache.invalidate(model="m1") == 3
    assert cache.get(key(0, model="m1")) is None
    assert cache.get(key(0, model="m2")) is not None
    with pytest.raises(ValueError, match="unknown cache key fields"):
        cache.invalidate(weights="x")


def test_disk_store_survives_a_new_cache_object(tmp_path):
    first = TileCache(directory=tmp_path / "tiles.zarr")
    first.put(key(0), arr(2.0))
    first.put(key(1, model="m2"), np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    second = TileCache(directory=tmp_path / "tiles.zarr")
    got = second.get(key(1, model="m2"))
    np.testing.assert_array_equal(got, np.arange(6).reshape(1, 2, 3))
    assert len(second) == 1  # promoted into memory
    assert second.invalidate(model="m2") == 1
    assert TileCache(directory=tmp_path / "tiles.zarr").get(key(1, model="m2")) is None
    assert TileCache(directory=tmp_path / "tiles.zarr").get(key(0)) is not None


def test_incomplete_disk_entry_is_a_miss(tmp_path):
    cache = TileCache(directory=tmp_path / "tiles.zarr")
    cache.put(key(0), arr(1.0))
    array = zarr.open_array(str(tmp_path / "tiles.zarr" / key(0).digest()), mode="r+")
    array.attrs["complete"] = False  # as if the run died between data and marker
    assert TileCache(directory=tmp_path / "tiles.zarr").get(key(0)) is None


def test_concurrent_puts_and_gets_keep_the_budget():
    cache = TileCache(max_bytes=20 * 1024)

    def work(offset: int) -> None:
        for i in range(200):
            cache.put(key(offset + i % 30), arr(i))
            cache.get(key(offset + (i * 7) % 30))

    threads = [threading.Thread(target=work, args=(o * 100,)) for o in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == sum(v.nbytes for v in cache._memory.values())
    assert cache.nbytes <= cache.max_bytes


SHARE_ONE_STORE = """
import sys, time
from pathlib import Path
import numpy as np
from napari_neuroseg.engine.cache import CacheKey, TileCache, TileKey
directory, go = sys.argv[1], Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
keys = [TileKey.make(CacheKey("img", "m1"), (64, 64, 8, 0, "dense"), (None, r, 0))
        for r in range(12)]
cache = TileCache(directory=directory)
for r, k in enumerate(keys):  # every process writes the same keys at about the same time
    cache.put(k, np.full(256, r, np.float32))
reader = TileCache(directory=directory)
print(",".join(str(float(reader.get(k)[0])) for k in keys))
"""


def test_processes_share_one_disk_store_without_races(tmp_path):
    """Several processes create the same store and write the same tiles at once."""
    import subprocess
    import sys

    go = tmp_path / "go"
    store = tmp_path / "store" / "tiles.zarr"
    procs = [subprocess.Popen([sys.executable, "-c", SHARE_ONE_STORE, str(store), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    expected = ",".join(str(float(r)) for r in range(12))
    assert [out.strip() for out, _ in outputs] == [expected] * 4
    assert [p.name for p in store.parent.iterdir()] == ["tiles.zarr"]  # no staging left

def test_an_old_partial_entry_is_replaced_by_a_complete_one(tmp_path):
    cache = TileCache(directory=tmp_path / "tiles.zarr")
    cache.put(key(0), arr(1.0))
    array = zarr.open_array(str(tmp_path / "tiles.zarr" / key(0).digest()), mode="r+")
    array.attrs["complete"] = False
    TileCache(directory=tmp_path / "tiles.zarr").put(key(0), arr(5.0))
    got = TileCache(directory=tmp_path / "tiles.zarr").get(key(0))
    np.testing.assert_array_equal(got, arr(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.zarr"]
