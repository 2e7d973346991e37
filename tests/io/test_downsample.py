"""One block downsampler for images (mean) and labels (most common non-zero label)."""

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io.downsample import downsample

SHAPES = [(8, 10), (7, 9), (1, 5)]  # even, odd, one row


def _old_slide_mean(block):
    """What io/_pyramid.mean_2x2 computed: odd edge dropped, integers rounded half up."""
    h, w = block.shape[0] // 2 * 2, block.shape[1] // 2 * 2
    quads = [block[i:h:2, j:w:2].astype(np.float64) for j in (0, 1) for i in (0, 1)]
    if np.issubdtype(block.dtype, np.integer):
        return np.floor((sum(quads) + 2) / 4).astype(block.dtype)
    return (sum(quads) / 4).astype(block.dtype)


def _old_writer_mean(level):
    """What io/writers._halve_mean computed: odd edge averaged with itself (float32 sums)."""
    pad = [(0, 0)] * (level.ndim - 2) + [(0, level.shape[-2] % 2), (0, level.shape[-1] % 2)]
    even = np.pad(level, pad, mode="edge")
    total = even[..., ::2, ::2] + even[..., 1::2, ::2]
    total = total + even[..., ::2, 1::2] + even[..., 1::2, 1::2]
    return (total / np.float32(4)).astype(level.dtype)


def _old_tissue_mean(level, factor):
    """What preprocess/tissue._block_mean computed: float32 block means rounded to uint8."""
    h, w = level.shape[0] // factor * factor, level.shape[1] // factor * factor
    blocks = level[:h, :w].astype(np.float32).reshape(h // factor, factor, w // factor, factor, -1)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_mean_equals_the_slide_pyramid_mean(shape, dtype):
    image = (np.random.default_rng(0).random((*shape, 3)) * 250).astype(dtype)
    expected = _old_slide_mean(image)
    np.testing.assert_array_equal(downsample(image), expected)
    lazy = downsample(da.from_array(image, chunks=3))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_mean_with_edge_padding_equals_the_writers_mean(shape):
    probs = np.random.default_rng(1).random((2, *shape)).astype(np.float32)
    got = downsample(da.from_array(probs, chunks=4), axes=(-2, -1), odd="edge").compute()
    assert got.shape == (2, -(-shape[0] // 2), -(-shape[1] // 2)) and got.dtype == np.float32
    np.testing.assert_allclose(got, _old_writer_mean(probs), rtol=1e-6)  # now summed in float64


@pytest.mark.parametrize("factor", [2, 3, 4, 7])
def test_mean_by_any_factor_equals_the_tissue_thumbnail_mean(factor):
    rgb = np.random.default_rng(2).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    expected = _old_tissue_mean(rgb, factor)
    np.testing.assert_array_equal(downsample(rgb, factor), expected)
    np.testing.assert_array_equal(downsample(da.from_array(rgb, chunks=5), factor), expected)


def test_input_is_not_modified():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    before = image.copy()
    downsample(image)
    downsample(image, mode="labels", odd="edge")
    np.testing.assert_array_equal(image, before)


def test_labels_keep_a_one_pixel_stroke():
    labels = np.zeros((16, 16), np.uint8)
    labels[:, 5] = 2  # an odd column: every second pixel misses it
    labels[9, :] = 1  # an odd row
    level = labels
    for k in range(1, 4):
        level = downsample(level, mode="labels")
        assert (level[:, 5 >> k] > 0).all() and (level[9 >> k] > 0).all(), k
        assert set(np.unique(level)) <= {0, 1, 2}  # ids stay ids, never averaged
    assert (downsample(labels)[:, 2] == 1).all()  # the mean would blur it away instead


def test_labels_take_the_most_common_non_zero_label():
    block = np.array([[[0, 3], [3, 5]], [[0, 0], [0, 0]], [[4, 0], [0, 6]]])
    got = downsample(block, axes=(1, 2), mode="labels")
    np.testing.assert_array_equal(got[:, 0, 0], [3, 0, 4])  # majority; empty; tie: first


def test_labels_on_dask_stay_lazy_and_agree():
    labels = np.random.default_rng(3).integers(0, 4, (30, 22), dtype=np.uint16)
    lazy = downsample(da.from_array(labels, chunks=7), mode="labels")
    assert isinstance(lazy, da.Array) and lazy.dtype == np.uint16
    np.testing.assert_array_equal(lazy.compute(), downsample(labels, mode="labels"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"mode": "max"}, "mode must be"), ({"odd": "pad"}, "odd must be"), ({"factor": 0}, "factor")],
)
def test_bad_arguments_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        downsample(np.zeros((4, 4)), **kwargs)
