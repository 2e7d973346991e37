"""predict_region / predict_volume / iter_predict_tiles end to end with trivial predictors."""

from __future__ import annotations

import functools
import tracemalloc
from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from napari_neuroseg.engine import (
    CacheKey,
    EngineError,
    EngineOptions,
    Region,
    TileCache,
    TileError,
    ZarrAggregator,
    blend_weights,
    choose_level,
    iter_predict_tiles,
    predict_region,
    predict_volume,
)

RNG = np.random.default_rng(42)
KERNELS = RNG.normal(size=(2, 3, 5, 5)).astype(np.float32)  # K=2 outputs from 3 channels


class Counting:
    """Wraps a predictor and counts tiles and calls."""

    def __init__(self, fn):
        self.fn = fn
        self.tiles = 0
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        self.tiles += batch.shape[0]
        return self.fn(batch)


def conv(image_chw: np.ndarray) -> np.ndarray:
    """A fixed random 5x5 convolution, C -> 2 channels, reflect boundary."""
    c = image_chw.shape[0]
    return np.stack(
        [
            sum(ndimage.correlate(image_chw[i], KERNELS[k, i], mode="reflect") for i in range(c))
            for k in range(2)
        ]
    )


def conv_predictor(batch: np.ndarray) -> np.ndarray:
    return np.stack([conv(x) for x in batch])


def whole_image_conv(image: np.ndarray, pad: int = 8) -> np.ndarray:
    chw = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    padded = np.pad(chw, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    return conv(padded)[:, pad:-pad, pad:-pad]


@pytest.fixture(scope="module")
def rgb():
    return RNG.random((150, 123, 3)).astype(np.float32)


@pytest.mark.parametrize("blend", ["none", "gaussian", "linear", "constant"])
@pytest.mark.parametrize("overlap", [0, 10])
def test_stitched_conv_equals_whole_image(rgb, blend, overlap):
    image = da.from_array(rgb, chunks=(40, 40, 3))
    options = EngineOptions(patch_size=48, halo=4, blend=blend, overlap=overlap)
    result = predict_region(image, conv_predictor, options)
    assert result.probabilities.shape == (2, 150, 123)
    np.testing.assert_allclose(result.probabilities, whole_image_conv(rgb), atol=1e-5)
    assert result.complete and result.covered.all()


def test_double_on_a_region_computes_only_its_tiles():
    img = RNG.random((500, 400)).astype(np.float32)
    pred = Counting(lambda x: 2 * x)
    region = Region(100, 150, 180, 260)
    options = EngineOptions(patch_size=64, halo=8, batch_size=4)
    result = predict_region(img, pred, options, region=region)
    np.testing.assert_allclose(result.probabilities[0], 2 * img[100:180, 150:260], atol=1e-6)
    # stride 48: rows 2..3, cols 3..5 -> 6 tiles, in batches of 4
    assert (pred.tiles, pred.calls) == (6, 2)
    assert result.counts.computed == 6 and result.counts.cancelled == 0
    assert result.region == region and result.translate == (100.0, 150.0)


def test_image_smaller_than_patch_and_halo():
    img = RNG.random((5, 7)).astype(np.float32)
    result = predict_region(img, conv_predictor, EngineOptions(64, halo=16, blend="none"))
    np.testing.assert_allclose(result.probabilities, whole_image_conv(img[..., None]), atol=1e-5)
    one = predict_region(np.full((1, 1), 3.0), lambda x: 2 * x, EngineOptions(8, halo=2))
    assert one.probabilities.shape == (1, 1, 1) and one.probabilities[0, 0, 0] == 6.0


def test_region_outside_the_image():
    with pytest.raises(EngineError, match="outside the image of height 50 and width 40"):
        predict_region(
            np.ones((50, 40)),
            lambda x: x,
            EngineOptions(patch_size=16, halo=2),
            region=(slice(0, 60), slice(0, 10)),
        )


def test_bad_options_are_named():
    img = np.ones((20, 20))
    with pytest.raises(EngineError, match="predict_volume"):
        predict_region(np.ones((2, 3, 4, 5)), lambda x: x, EngineOptions(8, halo=1))
    with pytest.raises(EngineError, match="returned 1 outputs per pixel, not 3"):
        predict_region(img, lambda x: x, EngineOptions(8, halo=1, n_outputs=3))
    with pytest.raises(EngineError, match="expected EngineOptions"):
        predict_region(img, lambda x: x, {"patch_size": 8})  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="leaves no core"):
        predict_region(img, lambda x: x, EngineOptions(8, halo=4))


def test_wrong_channel_count_is_explained(rgb):
    def gray_model(batch):
        if batch.shape[1] != 1:
            raise RuntimeError("weight of size [8, 1, 3, 3], expected input to have 1 channels")
        return batch

    with pytest.raises(TileError, match=r"3 channel\(s\) per pixel"):
        predict_region(rgb, gray_model, EngineOptions(32, halo=4))


def test_nan_in_image_names_the_tile():
    img = np.zeros((100, 100), np.float32)
    img[70, 75] = np.nan
    with pytest.raises(TileError, match=r"row 1, col 1\) at y 64:128, x 64:128.*NaN"):
        predict_region(img, lambda x: x, EngineOptions(64))


def test_cache_serves_repeat_requests_and_model_key_invalidates_its_own(rgb):
    cache = TileCache()
    key_a, key_b = CacheKey("rgb", "model-a"), CacheKey("rgb", "model-b")
    pred = Counting(conv_predictor)
    options = EngineOptions(48, halo=4)
    kwargs = {"cache": cache}
    first = predict_region(rgb, pred, options, cache_key=key_a, **kwargs)
    n = first.counts.computed
    middle = Region(40, 40, 100, 100)
    again = predict_region(rgb, pred, options, cache_key=key_a, region=middle, **kwargs)
    assert again.counts.computed == 0 and again.counts.cached > 0 and pred.tiles == n
    np.testing.assert_array_equal(again.probabilities, first.probabilities[:, 40:100, 40:100])
    other = predict_region(rgb, pred, options, cache_key=key_b, **kwargs)
    assert other.counts.computed == n and pred.tiles == 2 * n
    assert predict_region(rgb, pred, options, cache_key=key_a, **kwargs).counts.cached == n
    cache.invalidate(model="model-a")
    assert predict_region(rgb, pred, options, cache_key=key_a, **kwargs).counts.computed == n
    assert predict_region(rgb, pred, options, cache_key=key_b, **kwargs).counts.cached == n


def test_interrupted_run_resumes_from_the_zarr_cache(tmp_path):
    img = RNG.random((256, 256)).astype(np.float32)
    key = CacheKey("img", "double")
    pred = Counting(lambda x: 2 * x)
    progress = []
    partial = predict_region(
        img,
        pred,
        EngineOptions(patch_size=64, halo=0, batch_size=4),
        cache=TileCache(directory=tmp_path / "tiles.zarr"),
        cache_key=key,
        on_progress=lambda done, total: progress.append(done),
        should_stop=lambda: len(progress) == 2,
    )
    assert not partial.complete
    assert partial.counts.computed == 8 and partial.counts.cancelled == 8
    assert not partial.covered.all() and partial.covered[:128].all()
    # a new process: fresh memory, same directory
    fresh = Counting(lambda x: 2 * x)
    full = predict_region(
        img,
        fresh,
        EngineOptions(patch_size=64, halo=0),
        cache=TileCache(directory=tmp_path / "tiles.zarr"),
        cache_key=key,
    )
    assert fresh.tiles == 8 and full.counts.cached == 8 and full.complete
    np.testing.assert_allclose(full.probabilities[0], 2 * img, atol=1e-6)


def test_tile_filter_skips_tiles():
    img = RNG.random((128, 128)).astype(np.float32)
    pred = Counting(lambda x: x.mean(axis=1, keepdims=True) * 0 + 1)
    options = EngineOptions(32, tile_filter=lambda t: t.core.x0 >= 64, n_outputs=1)
    result = predict_region(img, pred, options)
    assert result.counts.skipped == 8 and result.counts.computed == 8 and pred.tiles == 8
    assert not result.covered[:, :64].any() and result.covered[:, 64:].all()
    assert (result.probabilities[0, :, :64] == 0).all() and (result.labels[:, 64:] == 1).all()
    nothing = predict_region(img, pred, EngineOptions(32, tile_filter=lambda t: False, n_outputs=4))
    assert nothing.probabilities.shape == (4, 128, 128) and nothing.counts.skipped == 16


@pytest.mark.parametrize("blend", ["constant", "linear", "gaussian"])
def test_tile_mode_blends_overlapping_windows(blend):
    # a LeNet-like tile classifier on 32 x 32 windows with stride 16 ("sliding window")
    img = RNG.random((64, 80)).astype(np.float32)
    result = predict_region(
        img,
        lambda b: b.mean(axis=(2, 3)),
        EngineOptions(patch_size=32, halo=0, overlap=16, mode="tile", blend=blend),
    )
    padded = np.pad(img, 64, mode="reflect")
    weights = blend_weights((32, 32), blend)
    total = np.zeros((64 + 64, 80 + 64))
    norm = np.zeros_like(total)
    for r in range(4):
        for c in range(5):
            y0, x0 = r * 16 - 8, c * 16 - 8  # window = core (16) widened by 8 on each side
            mean = padded[y0 + 64 : y0 + 96, x0 + 64 : x0 + 96].mean()
            total[y0 + 32 : y0 + 64, x0 + 32 : x0 + 64] += weights * mean
            norm[y0 + 32 : y0 + 64, x0 + 32 : x0 + 64] += weights
    expected = (total / np.maximum(norm, 1e-12))[32:96, 32:112]
    np.testing.assert_allclose(result.probabilities[0], expected, rtol=1e-5)
    # the tile means really differ, so the weights matter
    assert result.probabilities[0].std() > 0.005


def test_activation_and_labels():
    img = np.zeros((40, 40), np.float32)
    img[:, 20:] = 1.0

    def two_class_logits(batch):
        return np.concatenate([-4 * batch + 2, 4 * batch - 2], axis=1)

    options = EngineOptions(16, halo=2, activation="softmax")
    result = predict_region(img, two_class_logits, options)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1, rtol=1e-6)
    assert (result.labels[:, :20] == 0).all() and (result.labels[:, 20:] == 1).all()
    strict = predict_region(img, two_class_logits, replace(options, threshold=0.999))
    assert strict.labels.max() == 0


def test_iter_predict_tiles_yields_progressively_nearest_first():
    img = RNG.random((96, 96)).astype(np.float32)
    outputs = iter_predict_tiles(img, lambda x: 2 * x, EngineOptions(32, batch_size=1),
                                 focus=(80.0, 80.0))
    tile, values, source = next(outputs)
    assert (tile.row, tile.col) == (2, 2) and source == "computed"
    np.testing.assert_allclose(values[0], 2 * img[64:96, 64:96])
    assert len(list(outputs)) == 8
    with pytest.raises(EngineError, match="outside"):  # checked at the call, not at next()
        iter_predict_tiles(img, lambda x: x, EngineOptions(32), region=Region(0, 0, 97, 9))


def test_predict_volume_slice_by_slice_with_scale():
    vol = RNG.random((5, 40, 30, 3)).astype(np.float32)
    pred = Counting(conv_predictor)
    result = predict_volume(
        da.from_array(vol, chunks=(1, 40, 30, 3)),
        pred,
        EngineOptions(patch_size=24, halo=4, batch_size=8, blend="none"),
        planes=range(1, 4),
        scale=(3.0, 0.5, 0.5),
        translate=(10.0, 0.0, 0.0),
    )
    assert result.probabilities.shape == (2, 3, 40, 30) and result.labels.shape == (3, 40, 30)
    for i, z in enumerate(range(1, 4)):
        np.testing.assert_allclose(result.probabilities[:, i], whole_image_conv(vol[z]), atol=1e-5)
    assert result.translate == (13.0, 0.0, 0.0) and result.scale == (3.0, 0.5, 0.5)
    assert result.counts.computed == 3 * 6 and pred.calls == 3  # batches mix planes
    with pytest.raises(EngineError, match="planes"):
        predict_volume(vol, conv_predictor, EngineOptions(24, halo=4), planes=range(3, 9))
    with pytest.raises(EngineError, match="'zyx' or 'zyxc'"):
        predict_volume(vol[0, ..., 0], conv_predictor, EngineOptions(24, halo=4))


def test_moderate_lazy_slide_with_zarr_aggregator(tmp_path):
    def field(y, x):
        return (np.sin(y / 50.0) + np.cos(x / 70.0)).astype(np.float32)

    slide = da.fromfunction(field, shape=(4096, 4096), chunks=512, dtype=np.float32)
    pred = Counting(lambda x: np.concatenate([x, -x], axis=1))
    region = Region(1000, 2000, 2024, 3024)
    result = predict_region(
        slide,
        pred,
        EngineOptions(patch_size=256, halo=16, blend="gaussian", overlap=32),
        region=region,
        aggregator=functools.partial(ZarrAggregator, tmp_path / "pred.zarr", chunk=256),
    )
    # stride 192; windows (core +- 16) meeting y 1000:2024 -> rows 5..10, same for x 2000:3024
    assert pred.tiles == 36 == result.counts.computed
    assert isinstance(result.probabilities, da.Array)
    expected = field(*np.mgrid[1000:2024, 2000:3024].astype(np.float32))
    np.testing.assert_allclose(result.probabilities[0].compute(), expected, atol=1e-5)
    assert (result.labels.compute() == (expected < 0)).all()


@pytest.mark.slow
def test_50k_slide_region_with_bounded_memory(tmp_path):
    slide = da.random.default_rng(0).random((50_000, 50_000), chunks=1024, dtype=np.float32)
    pred = Counting(lambda x: 2 * x)
    region = Region(48_000, 49_000, 49_024, 50_000)  # touches the slide's far edge
    tracemalloc.start()
    result = predict_region(
        slide,
        pred,
        EngineOptions(patch_size=512, halo=32, batch_size=4),
        region=region,
        aggregator=functools.partial(ZarrAggregator, tmp_path / "pred.zarr"),
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pred.tiles == result.counts.computed == 9  # stride 448: rows/cols 107..109
    direct = slide[48_000:49_024, 49_000:50_000].compute()
    np.testing.assert_allclose(result.probabilities[0].compute(), 2 * direct, atol=1e-6)
    assert peak < 100 * 2**20  # measured ~31 MB; the slide itself would be 10 GB


def test_resampled_level_overlays_level0_in_world_units():
    y, x = np.mgrid[0:200, 0:200]
    level1 = (np.sin(y / 11.0) * np.cos(x / 7.0)).astype(np.float32)  # 0.5 um/px
    choice = choose_level([0.25, 0.5], 0.75)
    assert (choice.level, choice.factor) == (1, 1.5)
    work = choice.working_array(level1)
    scale, translate = choice.geometry((100.0, 0.0))
    region = choice.region_from_base(Region(300, 0, 389, 150), work.shape)
    result = predict_region(
        work,
        lambda b: 2 * b,
        EngineOptions(patch_size=48, halo=8),
        region=region,
        scale=scale,
        translate=translate,
    )
    assert region == Region(100, 0, 130, 50)  # ceil(389 / 3)
    np.testing.assert_allclose(result.probabilities[0], 2 * work[100:130, 0:50], atol=1e-5)
    assert result.scale == (0.75, 0.75)
    # working pixel (100, 0) is centred on level-0 pixel (301, 1): 100 + 301 * 0.25 um
    assert result.translate == pytest.approx((100.0 + 301 * 0.25, 1 * 0.25))
