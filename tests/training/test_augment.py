"""Augmentations: determinism, masks follow geometry, class-conditional strength."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import (
    Affine,
    Clahe,
    ClassConditionalAugment,
    ColorJitter,
    Cutout,
    FlipRotate,
    Gamma,
    GaussianBlur,
    Sharpen,
    StainAugment,
    ct_negative_augment,
    ct_positive_augment,
    histology_augment,
    tile_augment,
)


def _ct_slice(size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    brain = 0.5 + 0.1 * np.sin(6 * xx) * np.cos(5 * yy) + 0.03 * rng.standard_normal((size, size))
    brain[(yy - 0.3) ** 2 + (xx - 0.6) ** 2 < 0.01] = 0.85  # a lesion
    return np.clip(brain, 0, 1).astype(np.float32)


def _tile(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    mask = np.zeros((size, size), np.uint8)
    mask[5:20, 8:30] = 1
    mask[25:40, 20:44] = 2
    palette = np.array([[235, 230, 240], [150, 60, 140], [200, 120, 170]], np.uint8)
    image = palette[mask].astype(np.int16) + rng.integers(-8, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


RECIPES = [ct_positive_augment(p=1.0), ct_negative_augment(p=1.0), tile_augment(),
           histology_augment(), Affine(), ColorJitter(), StainAugment(), Cutout()]  # fmt: skip


@pytest.mark.parametrize("aug", RECIPES, ids=lambda a: type(a).__name__)
def test_same_seed_same_result(aug):
    image, mask = (_ct_slice(), None) if aug in RECIPES[:2] else _tile()
    a = aug(image, mask, np.random.default_rng(5))
    b = aug(image, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].dtype == image.dtype and a[0].shape == image.shape
    draws = [aug(image, mask, np.random.default_rng(s))[0] for s in range(6)]
    assert any(not np.array_equal(d, draws[0]) for d in draws[1:])


def test_flips_and_rotations_move_the_mask_with_the_image():
    _, mask = _tile()
    image = np.stack([mask * 100, mask * 50, np.arange(mask.size).reshape(mask.shape) % 7], -1)
    for seed in range(12):
        out, out_mask = FlipRotate()(image.astype(np.uint8), mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(out[..., 0], out_mask * 100)


def test_affine_moves_the_mask_with_the_image():
    _, mask = _tile(64)
    image = (mask * 0.4).astype(np.float32)
    aug = Affine(degrees=20, scale=(0.8, 1.2), translate=0.1)
    moved = 0
    for seed in range(8):
        out, out_mask = aug(image, mask, np.random.default_rng(seed))
        assert out_mask.dtype == mask.dtype and set(np.unique(out_mask)) <= {0, 1, 2}
        agree = np.mean(np.round(out / 0.4).astype(int) == out_mask)
        assert agree > 0.95
        moved += not np.array_equal(out_mask, mask)
    assert moved == 8


def test_positives_change_less_than_negatives():
    image = _ct_slice()
    pos, neg = ct_positive_augment(), ct_negative_augment()
    rng = np.random.default_rng(0)
    change_pos = np.mean([np.abs(pos(image, None, rng)[0] - image).mean() for _ in range(150)])
    change_neg = np.mean([np.abs(neg(image, None, rng)[0] - image).mean() for _ in range(150)])
    assert 0 < change_pos < change_neg / 2


def test_class_conditional_picks_by_label():
    image = _ct_slice()
    aug = ClassConditionalAugment(positive=Gamma(1.0, 1.0), negative=Gamma(2.0, 2.0))
    np.testing.assert_allclose(aug(image, rng=np.random.default_rng(0), label=1)[0], image)
    np.testing.assert_allclose(aug(image, rng=np.random.default_rng(0), label=0)[0], image**2,
                               rtol=1e-5)  # fmt: skip


def test_ct_operations_stay_in_unit_range():
    image = _ct_slice()
    rng = np.random.default_rng(2)
    for aug in (Gamma(), GaussianBlur(), Clahe(), Sharpen()):
        out, _ = aug(image, None, rng)
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    sharp, _ = Sharpen(amount=2.0)(image, None, rng)
    assert np.abs(np.diff(sharp, axis=1)).mean() > np.abs(np.diff(image, axis=1)).mean()
    blurred, _ = GaussianBlur(1.0, 1.0)(image, None, rng)
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(image, axis=1)).mean()


def test_stain_augment_identity_and_range():
    image, mask = _tile()
    same, same_mask = StainAugment(scale=0.0, shift=0.0)(image, mask, np.random.default_rng(0))
    assert same_mask is mask
    assert np.abs(same.astype(int) - image.astype(int)).max() <= 2
    out, _ = StainAugment(scale=0.2, shift=0.02)(image, None, np.random.default_rng(1))
    assert 0 < np.abs(out.astype(int) - image.astype(int)).mean() < 40
    with pytest.raises(ValueError, match="RGB"):
        StainAugment()(_ct_slice())


def test_cutout_area_and_the_mask_erased_with_it():
    image = np.ones((40, 40, 3), np.float32)
    mask = np.ones((40, 40), np.uint8)
    out, out_mask = Cutout(n_holes=1, size=0.25, fill=0.0)(image, mask, np.random.default_rng(3))
    holes = np.all(out == 0, axis=-1)
    assert 0 < holes.sum() <= 100
    assert np.array_equal(out_mask == 0, holes) and mask.all()


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        Gamma()(np.zeros((4, 4)), np.zeros((3, 4)))


def _mr_slice():
    """Three distinct channels and a bright square 'tumour' in FLAIR with its mask."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0], image[..., 2] = 40, 90
    image[20:40, 24:44, 1] = 220
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 24:44] = 1
    return image, mask


def test_cutout_erases_the_label_of_what_it_erases():
    from training.augment import Cutout

    image, mask = _mr_slice()
    out, out_mask = Cutout(size=0.4)(image, mask, np.random.default_rng(3))
    erased = (out == 0).all(axis=2) & (image != 0).any(axis=2)
    assert erased.any() and not out_mask[erased].any()
    assert np.array_equal(out_mask[~erased], mask[~erased])
    assert mask.sum() == 400  # the input is untouched


def test_channel_intensity_changes_each_sequence_on_its_own_and_never_mixes_them():
    from training.augment import ChannelIntensity

    image, mask = _mr_slice()
    out, out_mask = ChannelIntensity(gain=0.3, contrast=0.3, shift=0.0)(
        image, mask, np.random.default_rng(1))
    assert out_mask is mask
    assert np.all(out[..., 0] == out[0, 0, 0]) and np.all(out[..., 2] == out[0, 0, 2])
    # FLAIR keeps its tumour/background pattern; the other channels stay flat
    assert out[30, 30, 1] > out[0, 0, 1]
    assert (out[0, 0, 0], out[0, 0, 2]) != (40, 90)


def test_mri_augment_keeps_image_and_label_together():
    from training.augment import mri_augment

    aug = mri_augment(affine_p=1.0, intensity_p=1.0, cutout_p=0.0)
    for seed in range(6):
        image, mask = _mr_slice()
        out, out_mask = aug(image, mask, np.random.default_rng(seed))
        flair = out[..., 1].astype(float)
        inside, outside = flair[out_mask == 1], flair[out_mask == 0]
        assert out_mask.sum() > 250  # rotated / scaled, not lost
        assert inside.mean() > outside.mean() + 80  # the label moved with the tumour
