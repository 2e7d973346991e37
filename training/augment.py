"""Augmentations: class-conditional CT (the CT metastasis recipe, docs/training-recipes.md), tile
geometry/colour/cutout (the LeNet nuclei-tile recipe), stain.

Every augmentation is a callable ``aug(image, mask=None, rng=None) -> (image, mask)``:

- ``image``: ``(H, W)`` or ``(H, W, C)``, float in [0, 1] or uint8 (returned in the same dtype);
- ``mask``: ``(H, W)`` labels or ``None``; geometric transforms move it with the image
  (nearest neighbour), intensity transforms leave it unchanged;
- ``rng``: a :class:`numpy.random.Generator`; the same seed gives the same result.

CT slices are augmented after windowing (values in [0, 1]) and before the z-score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import color, exposure, filters, transform

Mask = np.ndarray | None
_OD_FLOOR = 1.0 / 255.0  # darkest value for optical density (-log), as a uint8 pixel of 1
Pair = tuple[np.ndarray, Mask]


def _float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.asarray(image, dtype=np.float32)


def _restore(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    out = np.clip(out, 0.0, 1.0)
    if like.dtype == np.uint8:
        return np.round(out * 255.0).astype(np.uint8)
    return out.astype(like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def _check(image: np.ndarray, mask: Mask) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got {image.shape}")
    if mask is not None and mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")


class _IntensityAugment:
    """Base of the intensity-only augmentations: the mask passes through unchanged.

    Subclasses implement :meth:`_apply` on the image as float32 in [0, 1] (a view of a float32
    input: copy before writing into it); the result is clipped and given the input's dtype.
    """

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        _check(image, mask)
        return _restore(self._apply(_float(image), _rng(rng)), image), mask

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class Compose:
    """Apply augmentations in order."""

    def __init__(self, augs: Sequence[object]) -> None:
        self.augs = list(augs)

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        rng = _rng(rng)
        for aug in self.augs:
            image, mask = aug(image, mask, rng)
        return image, mask


class RandomApply:
    """Apply ``aug`` with probability ``p`` (the draw is made even when ``p`` is 0 or 1)."""

    def __init__(self, aug: object, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {p}")
        self.aug, self.p = aug, float(p)

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        rng = _rng(rng)
        return self.aug(image, mask, rng) if rng.random() < self.p else (image, mask)


@dataclass(frozen=True)
class Gamma(_IntensityAugment):
    """``image ** g`` with ``g`` uniform in ``[low, high]``."""

    low: float = 0.9
    high: float = 1.1

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(image, 0, 1) ** rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class GaussianBlur(_IntensityAugment):
    """Gaussian blur over H and W with sigma uniform in ``[sigma_low, sigma_high]`` pixels."""

    sigma_low: float = 0.3
    sigma_high: float = 0.7

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = rng.uniform(self.sigma_low, self.sigma_high)
        return ndimage.gaussian_filter(image, (sigma, sigma) + (0,) * (image.ndim - 2))


@dataclass(frozen=True)
class Clahe(_IntensityAugment):
    """Contrast-limited adaptive histogram equalisation (``equalize_adapthist``)."""

    clip_limit: float = 0.01
    kernel_size: int | None = None

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return exposure.equalize_adapthist(np.clip(image, 0, 1), kernel_size=self.kernel_size,
                                           clip_limit=self.clip_limit)


@dataclass(frozen=True)
class Sharpen(_IntensityAugment):
    """Unsharp mask ``x + amount * (x - blur(x))`` (the CT metastasis recipe: "2x sharpening")."""

    amount: float = 2.0
    radius: float = 1.0

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return filters.unsharp_mask(image, radius=self.radius, amount=self.amount,
                                    channel_axis=-1 if image.ndim == 3 else None)


@dataclass(frozen=True)
class FlipRotate:
    """Random horizontal / vertical flips (each p = 0.5) and a random multiple of 90 degrees."""

    rotate90: bool = True

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        _check(image, mask)
        rng = _rng(rng)
        flips = rng.random(2) < 0.5
        turns = int(rng.integers(4)) if self.rotate90 else 0
        arrays = [image] if mask is None else [image, mask]
        out = []
        for array in arrays:
            if flips[0]:
                array = array[:, ::-1]
            if flips[1]:
                array = array[::-1]
            out.append(np.ascontiguousarray(np.rot90(array, turns, axes=(0, 1))))
        return out[0], (out[1] if mask is not None else None)


@dataclass(frozen=True)
class Affine:
    """Small random affine: rotation (degrees), isotropic scale, translation (fraction of size).

    The image is interpolated linearly with reflected borders, the mask by nearest neighbour.
    """

    degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        _check(image, mask)
        rng = _rng(rng)
        height, width = image.shape[:2]
        angle = np.deg2rad(rng.uniform(-self.degrees, self.degrees))
        zoom = rng.uniform(*self.scale)
        shift = rng.uniform(-self.translate, self.translate, 2) * (width, height)
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        to_origin = transform.AffineTransform(translation=-centre)
        spin = transform.AffineTransform(scale=zoom, rotation=angle)
        back = transform.AffineTransform(translation=centre + shift)
        inverse = np.linalg.inv(back.params @ spin.params @ to_origin.params)
        out = transform.warp(_float(image), inverse, order=1, mode="reflect")
        warped_mask = None
        if mask is not None:
            warped_mask = transform.warp(
                mask, inverse, order=0, mode="edge", preserve_range=True
            ).astype(mask.dtype)
        return _restore(out, image), warped_mask


@dataclass(frozen=True)
class ColorJitter(_IntensityAugment):
    """Brightness, contrast, saturation (factors ``1 +- x``) and hue (shift ``+- hue``) jitter."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, c, s = (rng.uniform(1 - x, 1 + x) for x in (self.brightness, self.contrast,
                                                        self.saturation))  # fmt: skip
        h = rng.uniform(-self.hue, self.hue)
        out = image * b
        out = (out - out.mean()) * c + out.mean()
        if image.ndim == 3 and image.shape[2] == 3:
            hsv = color.rgb2hsv(np.clip(out, 0, 1))
            hsv[..., 0] = (hsv[..., 0] + h) % 1.0
            hsv[..., 1] = np.clip(hsv[..., 1] * s, 0, 1)
            out = color.hsv2rgb(hsv)
        return out


@dataclass(frozen=True)
class Cutout:
    """Fill ``n_holes`` random squares of side ``size`` (fraction of the shorter side).

    With a mask (segmentation), the squares become background (0) in the mask too: a tumour
    that is erased from the image must not keep its label. Tile classification has no mask.
    """

    n_holes: int = 1
    size: float = 0.25
    fill: float = 0.0

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        _check(image, mask)
        rng = _rng(rng)
        out = _float(image).copy()
        erased = None if mask is None else np.array(mask, copy=True)
        height, width = image.shape[:2]
        side = max(1, round(self.size * min(height, width)))
        for _ in range(self.n_holes):
            y, x = int(rng.integers(height)), int(rng.integers(width))
            y0, x0 = max(0, y - side // 2), max(0, x - side // 2)
            out[y0 : y0 + side, x0 : x0 + side] = self.fill
            if erased is not None:
                erased[y0 : y0 + side, x0 : x0 + side] = 0
        return _restore(out, image), erased


@dataclass(frozen=True)
class ChannelIntensity(_IntensityAugment):
    """Per-channel intensity and contrast changes, each channel on its own.

    For images whose channels are separate measurements (the pre-contrast, FLAIR and
    post-contrast MR sequences), unlike :class:`ColorJitter`, whose hue and saturation steps
    mix them. Channel ``c`` becomes ``(x_c - m_c) * contrast_c + m_c * gain_c + shift``
    with ``m_c`` its mean, ``contrast_c, gain_c ~ U(1 - x, 1 + x)`` and
    ``shift ~ U(-shift, shift)`` (in units of the value range). The mask is unchanged.
    """

    gain: float = 0.15
    contrast: float = 0.15
    shift: float = 0.05

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image.copy()
        planes = out[..., None] if out.ndim == 2 else out
        for c in range(planes.shape[-1]):
            plane = planes[..., c]
            mean = float(plane.mean())
            contrast, gain = rng.uniform(1 - self.contrast, 1 + self.contrast), \
                rng.uniform(1 - self.gain, 1 + self.gain)
            planes[..., c] = (plane - mean) * contrast + mean * gain + \
                rng.uniform(-self.shift, self.shift)
        return out


@dataclass(frozen=True)
class StainAugment(_IntensityAugment):
    """H&E stain augmentation in HED optical-density space (Tellez et al. 2018 style).

    The optical density ``-log(rgb)`` is unmixed into haematoxylin, eosin and DAB with
    scikit-image's Ruifrok-Johnston matrix (``skimage.color.hed_from_rgb``); each channel ``c``
    becomes ``c * a + b`` with ``a ~ U(1 - scale, 1 + scale)``, ``b ~ U(-shift, shift)``, and
    is mixed back. Unlike ``rgb2hed``/``hed2rgb`` nothing is clipped, so ``scale = shift = 0``
    gives the image back. RGB uint8 or float input.
    """

    scale: float = 0.05
    shift: float = 0.01

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"stain augmentation needs an RGB (H, W, 3) image, got {image.shape}")
        alpha = rng.uniform(1 - self.scale, 1 + self.scale, 3)
        beta = rng.uniform(-self.shift, self.shift, 3)
        optical_density = -np.log(np.clip(image, _OD_FLOOR, 1.0))
        hed = optical_density @ color.hed_from_rgb
        return np.exp(-((hed * alpha + beta) @ color.rgb_from_hed))


# -- the recipes' augmentations -------------------------------------------------------------


def ct_positive_augment(p: float = 0.7, gamma: tuple[float, float] = (0.95, 1.05),
                        blur_p: float = 0.5, blur_sigma: tuple[float, float] = (0.3, 0.7),
                        ) -> RandomApply:  # fmt: skip
    """The CT metastasis recipe, positive (metastasis) slices: with probability 0.7, mild gamma,
    gentle blur."""
    inner = Compose([Gamma(*gamma), RandomApply(GaussianBlur(*blur_sigma), blur_p)])
    return RandomApply(inner, p)


def ct_negative_augment(p: float = 0.5, gamma: tuple[float, float] = (0.9, 1.1),
                        clahe_p: float = 0.5, clip_limit: float = 0.01,
                        sharpen_p: float = 0.5, sharpen_amount: float = 2.0,
                        ) -> RandomApply:  # fmt: skip
    """The CT metastasis recipe, negative slices: with probability 0.5, gamma, CLAHE, 2x
    sharpening."""
    inner = Compose([
        Gamma(*gamma),
        RandomApply(Clahe(clip_limit=clip_limit), clahe_p),
        RandomApply(Sharpen(amount=sharpen_amount), sharpen_p),
    ])  # fmt: skip
    return RandomApply(inner, p)


class ClassConditionalAugment:
    """The CT metastasis recipe's class-conditional augmentation: mild for positives, strong for
    negatives.

    Call as ``aug(image, mask, rng, label=...)``; ``label`` truthy selects ``positive``.
    """

    def __init__(self, positive: object | None = None, negative: object | None = None) -> None:
        self.positive = positive if positive is not None else ct_positive_augment()
        self.negative = negative if negative is not None else ct_negative_augment()

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None, *, label: int) -> Pair:
        aug = self.positive if label else self.negative
        return aug(image, mask, _rng(rng))


def tile_augment(
    affine_p: float = 0.5, jitter_p: float = 0.8, cutout_p: float = 0.5, cutout: bool = True
) -> Compose:
    """The LeNet nuclei-tile recipe's tile augmentation: flips/90 degrees, small affine, colour
    jitter, cutout."""
    augs: list[object] = [
        FlipRotate(), RandomApply(Affine(), affine_p), RandomApply(ColorJitter(), jitter_p),
    ]  # fmt: skip
    if cutout:
        augs.append(RandomApply(Cutout(), cutout_p))
    return Compose(augs)


def mri_augment(affine_p: float = 0.5, intensity_p: float = 0.8, cutout_p: float = 0.3
                ) -> Compose:
    """MR slices (the FLAIR MRI recipe): left-right flips, small rotations and scaling, per-channel
    intensity and contrast (the sequences are never mixed), cutout that erases the label too.

    No 90° turns or up-down flips: axial brain slices have an anterior and a posterior.
    """
    return Compose([LeftRightFlip(), RandomApply(Affine(), affine_p),
                    RandomApply(ChannelIntensity(), intensity_p),
                    RandomApply(Cutout(), cutout_p)])


@dataclass(frozen=True)
class LeftRightFlip:
    """Mirror image and mask left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, image: np.ndarray, mask: Mask = None, rng=None) -> Pair:
        _check(image, mask)
        if _rng(rng).random() >= self.p:
            return image, mask
        flipped = np.ascontiguousarray(image[:, ::-1])
        return flipped, (None if mask is None else np.ascontiguousarray(mask[:, ::-1]))


def histology_augment(stain_p: float = 0.8, affine_p: float = 0.3) -> Compose:
    """Histology segmentation tiles: flips/90 degrees, small affine, stain augmentation."""
    return Compose([FlipRotate(), RandomApply(Affine(), affine_p),
                    RandomApply(StainAugment(), stain_p)])  # fmt: skip
