"""TileComputer: preprocessing, batching, output checks, cache use, clear tile errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_neuroseg.engine.cache import CacheKey, TileCache
from napari_neuroseg.engine.compute import TileComputer, TileCounts, apply_activation, iter_outputs
from napari_neuroseg.engine.errors import EngineError, TileError
from napari_neuroseg.engine.tiling import Region, TileGrid


class Recorder:
    """A predictor that remembers its batches and returns ``fn(batch)``."""

    def __init__(self, fn=lambda b: b):
        self.fn = fn
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch.copy())
        return self.fn(batch)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)


def test_rgb_tiles_become_float32_chw_after_preprocessing(rgb):
    grid = TileGrid((40, 40), 20, halo=2)
    rec = Recorder()
    steps = [lambda p: p[..., ::-1], lambda p: p.astype(np.float32) / 255]
    computer = TileComputer(rgb, rec, grid, preprocess=steps)
    [out] = computer.compute([grid.tile(0, 1)])
    batch = rec.batches[0]
    assert batch.dtype == np.float32 and batch.shape == (1, 3, 20, 20)
    expected = np.pad(rgb, ((2, 2), (2, 2), (0, 0)), mode="reflect")[0:20, 16:36, ::-1] / 255
    np.testing.assert_allclose(batch[0], np.moveaxis(expected, -1, 0), rtol=1e-6)
    # the halo is cropped from the output: the window is the core (no overlap)
    assert out.values.shape == (3, 16, 16) and out.source == "computed"
    np.testing.assert_allclose(out.values, batch[0, :, 2:18, 2:18])


def test_nan_tile_is_named():
    img = np.zeros((64, 64), np.float32)
    img[40, 50] = np.nan
    grid = TileGrid((64, 64), 32, halo=4)
    computer = TileComputer(img, Recorder(), grid)
    computer.compute([grid.tile(0, 0)])  # no NaN here
    with pytest.raises(TileError, match=r"tile \(row 1, col 2\) at y 24:48, x 48:72.*NaN") as info:
        computer.compute([grid.tile(1, 2)])
    assert info.value.tile.key == (None, 1, 2)


def test_predictor_failure_is_wrapped_with_channel_hint(rgb):
    def expects_one_channel(batch):
        if batch.shape[1] != 1:
            raise RuntimeError("expected input to have 1 channels")
        return batch

    grid = TileGrid((40, 40), 20)
    computer = TileComputer(rgb, expects_one_channel, grid)
    with pytest.raises(TileError, match=r"3 channel\(s\) per pixel.*model's input channels") as e:
        computer.compute([grid.tile(0, 0)])
    assert isinstance(e.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("mode", "fn", "message"),
    [
        ("dense", lambda b: b[:, :, ::2, ::2], r"expected \(N, K, 20, 20\).*mode='tile'"),
        ("dense", lambda b: b[:1], "N=2"),
        ("tile", lambda b: b, r"expected \(N, K\)"),
        ("dense", lambda b: b * np.nan, "NaN or infinity"),
    ],
)
def test_bad_outputs_are_reported(mode, fn, message):
    grid = TileGrid((40, 40), 20)
    computer = TileComputer(np.ones((40, 40), np.float32), fn, grid, mode=mode)
    with pytest.raises(TileError, match=message):
        computer.compute([grid.tile(0, 0), grid.tile(0, 1)])


def test_tile_mode_accepts_flat_outputs_and_torch_like_tensors():
    class FakeTensor:
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    grid = TileGrid((40, 40), 20)
    flat = TileComputer(np.ones((40, 40)), lambda b: b.mean(axis=(1, 2, 3)), grid, mode="tile")
    assert flat.compute([grid.tile(0, 0)])[0].values.shape == (1,)
    dense = TileComputer(np.ones((40, 40)), lambda b: FakeTensor(b * 3), grid)
    assert dense.compute([grid.tile(0, 0)])[0].values.max() == 3


def test_filter_cache_and_compute_in_one_batch():
    img = np.arange(1600, dtype=np.float32).reshape(40, 40)
    grid = TileGrid((40, 40), 20)
    cache = TileCache()
    rec = Recorder()
    ckey = CacheKey("img", "identity")
    keep = lambda tile: tile.col != 1  # noqa: E731
    computer = TileComputer(img, rec, grid, tile_filter=keep, cache=cache, cache_key=ckey)
    tiles = [grid.tile(0, 0), grid.tile(0, 1), grid.tile(1, 0)]
    first = computer.compute(tiles)
    assert [o.source for o in first] == ["computed", "skipped", "computed"]
    assert first[1].values is None
    second = computer.compute(tiles)
    assert [o.source for o in second] == ["cached", "skipped", "cached"]
    assert len(rec.batches) == 1 and rec.batches[0].shape[0] == 2
    np.testing.assert_array_equal(second[2].values, first[2].values)


def test_cache_without_key_is_refused():
    with pytest.raises(EngineError, match="cache_key"):
        TileComputer(np.ones((4, 4)), Recorder(), TileGrid((4, 4), 4), cache=TileCache())
    with pytest.raises(EngineError, match="unknown mode"):
        TileComputer(np.ones((4, 4)), Recorder(), TileGrid((4, 4), 4), mode="pixels")


def test_iter_outputs_batches_progress_and_stop():
    grid = TileGrid((100, 100), 10)
    tiles = grid.tiles_in(Region(0, 0, 100, 100), blended=False)
    rec = Recorder()
    progress = []
    outputs = list(
        iter_outputs(
            TileComputer(np.ones((100, 100)), rec, grid),
            tiles,
            batch_size=30,
            should_stop=lambda: len(progress) >= 2,
            on_progress=lambda done, total: progress.append((done, total)),
        )
    )
    assert progress == [(30, 100), (60, 100)]
    assert len(outputs) == 60 and [b.shape[0] for b in rec.batches] == [30, 30]
    counts = TileCounts()
    for out in outputs:
        counts.count(out)
    assert counts == TileCounts(computed=60)
    with pytest.raises(EngineError, match="batch_size"):
        list(iter_outputs(TileComputer(np.ones((9, 9)), rec, grid), tiles, batch_size=0))


def test_activations():
    logits = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)  # K=2, two pixels
    soft = apply_activation(logits, "softmax")
    np.testing.assert_allclose(soft.sum(axis=0), 1, rtol=1e-6)
    assert soft[1, 0] == pytest.approx(1 / (1 + np.exp(-2)))
    sig = apply_activation(logits, "sigmoid")
    assert sig[0, 1] == pytest.approx(1 / (1 + np.exp(2)))
    assert apply_activation(logits, "none") is logits


def test_in_place_preprocessing_never_touches_the_image():
    img = np.ones((32, 32), np.float32)

    def in_place(patch):
        patch *= 10
        return patch

    grid = TileGrid((32, 32), 16)
    out = TileComputer(img, lambda b: b, grid, preprocess=[in_place]).compute([grid.tile(0, 0)])
    assert (out[0].values == 10).all() and (img == 1).all()


def test_skipped_tiles_take_no_place_in_a_batch():
    from napari_neuroseg.engine import EngineOptions, predict_region

    image = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    sizes: list[int] = []

    def predictor(batch):
        sizes.append(len(batch))
        return batch * 2

    progress: list[tuple[int, int]] = []
    options = EngineOptions(patch_size=32, halo=0, batch_size=4,
                            tile_filter=lambda tile: tile.col % 2 == 0)
    result = predict_region(image, predictor, options,
                            on_progress=lambda d, t: progress.append((d, t)))
    assert result.counts.skipped == 32 and result.counts.computed == 32
    assert sizes == [4] * 8  # full batches although every other tile is skipped
    assert progress[-1] == (64, 64) and len(progress) == len(set(progress))


def test_prefetch_reads_the_next_batch_on_another_thread_with_equal_outputs():
    import threading

    image = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    grid = TileGrid((96, 96), 32, halo=4)
    tiles = grid.tiles_in(Region(0, 0, 96, 96), blended=False)
    where: dict[str, set] = {"read": set(), "predict": set()}

    def step(patch):
        where["read"].add(threading.get_ident())
        return patch

    def predictor(batch):
        where["predict"].add(threading.get_ident())
        return batch[:, :2] * 0.5

    results = {}
    for prefetch in (True, False):
        computer = TileComputer(image, predictor, grid, preprocess=[step])
        results[prefetch] = list(iter_outputs(computer, tiles, batch_size=4, prefetch=prefetch))
    assert where["predict"] == {threading.get_ident()}  # the predictor stays on the caller
    assert len(where["read"] - {threading.get_ident()}) >= 1  # reads went to a reader thread
    for a, b in zip(results[True], results[False], strict=True):
        assert a.tile == b.tile
        np.testing.assert_array_equal(a.values, b.values)
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith("neuroseg-read") for n in names)  # the reader is shut down


def test_prefetch_errors_name_the_tile_and_stopping_leaves_no_thread():
    import threading

    img = np.zeros((64, 64), np.float32)
    img[40, 50] = np.nan
    grid = TileGrid((64, 64), 16)
    tiles = grid.tiles_in(Region(0, 0, 64, 64), blended=False)
    with pytest.raises(TileError, match="NaN"):
        list(iter_outputs(TileComputer(img, Recorder(), grid), tiles, batch_size=2))
    gen = iter_outputs(TileComputer(np.ones((64, 64)), Recorder(), grid), tiles, batch_size=2)
    next(gen)
    gen.close()  # a consumer that stops early
    assert not any(t.name.startswith("neuroseg-read") for t in threading.enumerate())


def test_integer_tiles_need_no_finite_check_but_float_ones_get_it():
    grid = TileGrid((16, 16), 16)
    ints = np.full((16, 16), 7, np.uint16)
    [out] = TileComputer(ints, Recorder(), grid).compute([grid.tile(0, 0)])
    assert out.values.dtype == np.float32 and (out.values == 7).all()
    floats = np.full((16, 16), np.inf, np.float32)
    with pytest.raises(TileError, match="NaN or infinite"):
        TileComputer(floats, Recorder(), grid).compute([grid.tile(0, 0)])
