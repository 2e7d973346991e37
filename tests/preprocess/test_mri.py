"""Per-image and per-channel z-scores."""

from __future__ import annotations

import numpy as np
import pytest

from napari_neuroseg.preprocess.mri import zscore


@pytest.fixture
def head() -> np.ndarray:
    """A 2-d 'head': zero background around a disc of values with mean 100 and std 20."""
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64), dtype=np.uint16)
    yy, xx = np.mgrid[:64, :64]
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 24**2
    image[inside] = np.clip(rng.normal(100, 20, inside.sum()), 1, None).astype(np.uint16)
    return image


def test_statistics_over_nonzero_voxels_by_default(head):
    copy = head.copy()
    out = zscore(head)
    assert out.dtype == np.float32 and out.shape == head.shape
    inside = head != 0
    assert out[inside].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[inside].std() == pytest.approx(1.0, abs=1e-4)
    expected = -head[inside].mean() / head[inside].std()
    assert out[~inside] == pytest.approx(expected, rel=1e-4)  # background keeps its z-score
    np.testing.assert_array_equal(head, copy)


def test_explicit_mask_and_fill_outside(head):
    mask = np.zeros(head.shape, dtype=bool)
    mask[20:40, 20:40] = True
    out = zscore(head, mask, fill_outside=0.0)
    assert out[mask].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[mask].std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[~mask] == 0.0)
    with pytest.raises(ValueError, match="does not match"):
        zscore(head, mask[:10])


def test_per_channel_statistics(head):
    stack = np.stack([head, 3 * head + 7 * (head > 0), head // 2], axis=-1)  # (y, x, c)
    out = zscore(stack, channel_axis=-1)
    assert out.shape == stack.shape
    for c in range(3):
        values = out[..., c][head > 0]
        assert values.mean() == pytest.approx(0.0, abs=1e-4)
        assert values.std() == pytest.approx(1.0, abs=1e-3)
    inside = head > 0  # an affine change of the values inside: the same z-scores there
    np.testing.assert_allclose(out[..., 0][inside], out[..., 1][inside], atol=1e-4)
    whole = zscore(stack)
    assert not np.allclose(whole[..., 0], out[..., 0])  # one set of statistics for all


def test_clip(head):
    out = zscore(head, clip=1.5)
    assert out.min() == pytest.approx(-1.5) and out.max() == pytest.approx(1.5)
    out = zscore(head, clip=(-0.5, 2.0))
    assert out.min() == pytest.approx(-0.5) and out.max() <= 2.0
    with pytest.raises(ValueError, match="low < high"):
        zscore(head, clip=(1.0, -1.0))


def test_constant_and_empty_images_give_zeros():
    np.testing.assert_array_equal(zscore(np.full((4, 4), 5.0)), 0.0)
    np.testing.assert_array_equal(zscore(np.zeros((4, 4))), 0.0)
    out = zscore(np.arange(16.0).reshape(4, 4), np.zeros((4, 4), bool))  # empty mask: all voxels
    assert out.mean() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.realdata
def test_real_lgg_flair_slice(shared_data):
    from skimage.io import imread

    paths = sorted((shared_data / "lgg_mri_slices").glob("TCGA_*_[0-9]*.tif"))
    image = next(imread(path) for path in paths if not path.stem.endswith("_mask"))
    assert image.shape == (256, 256, 3)
    out = zscore(image, channel_axis=-1)
    for c in range(3):
        brain = image[..., c] > 0
        assert out[..., c][brain].mean() == pytest.approx(0.0, abs=1e-4)
        assert out[..., c][brain].std() == pytest.approx(1.0, abs=1e-3)
