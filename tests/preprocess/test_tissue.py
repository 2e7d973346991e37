"""HSV tissue detection (the LGG tissue recipe), tissue fractions and tile filters."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io.slide import read_slide
from napari_neuroseg.preprocess.tissue import (
    TileFilter,
    hsv_saturation_value,
    lowres_level,
    select_level,
    slide_tissue_mask,
    slide_tissue_mask_at,
    tile_filter_from_mask,
    tissue_fraction,
    tissue_mask,
)
from napari_neuroseg.samples._slide_texture import BACKGROUND, he_region
from napari_neuroseg.samples.slide import write_synthetic_slide

SIZE = (4096, 4096)


def lazy_level(downsample: int, computed: list[int], chunk: int = 256) -> da.Array:
    """One level of the procedural synthetic slide as a dask array that logs its computes."""
    height, width = SIZE[0] // downsample, SIZE[1] // downsample

    def block(block_info=None) -> np.ndarray:
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        computed.append(downsample)
        return he_region(y0, x0, y1 - y0, x1 - x0, downsample=downsample, size=SIZE)

    chunks = ((chunk,) * (height // chunk), (chunk,) * (width // chunk), (3,))
    return da.map_blocks(block, dtype=np.uint8, chunks=chunks)


@pytest.fixture
def pyramid() -> tuple[list[da.Array], list[int]]:
    computed: list[int] = []
    return [lazy_level(2**k, computed) for k in range(5)], computed


def seed_000_mask(rgb: np.ndarray) -> np.ndarray:
    """The LGG tissue recipe's ``detect_tissue_mask``, verbatim (OpenCV)."""
    cv2 = pytest.importorskip("cv2")
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    mask = (hsv[:, :, 1] > 15) & (hsv[:, :, 2] < 240)
    kernel = np.ones((5, 5), np.uint8)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask.astype(bool)


def test_saturation_and_value_match_opencv():
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [10, 0, 0]]
    saturation, value = hsv_saturation_value(rgb)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    np.testing.assert_array_equal(value, hsv[..., 2])
    assert np.abs(saturation.astype(int) - hsv[..., 1]).max() <= 1


def test_tissue_mask_equals_seed_000_on_a_thumbnail():
    thumbnail = he_region(0, 0, 512, 512, downsample=8, size=SIZE)
    noisy = np.random.default_rng(1).normal(0, 6, thumbnail.shape)
    thumbnail = np.clip(thumbnail + noisy, 0, 255).astype(np.uint8)
    mask = tissue_mask(thumbnail)
    expected = seed_000_mask(thumbnail)
    assert np.mean(mask != expected) < 1e-3  # saturation can differ by 1 at the threshold
    assert 0.3 < mask.mean() < 0.9


def test_tissue_mask_rejects_white_and_grey_keeps_stain():
    rgb = np.full((40, 40, 3), 242, dtype=np.uint8)  # white background
    rgb[:, 20:] = (128, 128, 128)  # grey (unsaturated): not tissue
    rgb[5:15, 5:15] = (200, 120, 170)  # pink stroma
    mask = tissue_mask(rgb)
    assert mask[5:15, 5:15].all()
    assert mask.sum() == 100


def test_morphology_removes_specks_and_fills_gaps():
    rgb = np.full((30, 30, 3), 242, dtype=np.uint8)
    rgb[4, 4] = (150, 60, 140)  # a 1-pixel speck: opened away
    rgb[10:25, 10:25] = (150, 60, 140)
    rgb[17, 17] = 242  # a 1-pixel hole: closed
    mask = tissue_mask(rgb)
    assert not mask[4, 4] and mask[17, 17]
    assert not tissue_mask(rgb, kernel=1)[17, 17]


def test_tissue_mask_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        tissue_mask(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tissue_mask(np.zeros((8, 8), dtype=np.uint8))


def test_tissue_fraction_values():
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :10] = True  # left half is tissue
    boxes = [
        (0, 40, 0, 40),  # entirely left (downsample 4)
        (0, 40, 40, 80),  # entirely right
        (0, 40, 20, 60),  # half and half
        (30, 50, 70, 90),  # right, partly beyond the slide: only the inside counts
        (1, 2, 1, 2),  # inside one mask pixel
        (100, 120, 0, 10),  # entirely below the slide
    ]
    fractions = tissue_fraction(mask, boxes, 4)
    np.testing.assert_allclose(fractions, [1, 0, 0.5, 0, 1, 0])
    np.testing.assert_allclose(tissue_fraction(mask, [(0, 20, 0, 40)], (2, 4)), [1.0])
    np.testing.assert_allclose(tissue_fraction(mask, [(0, 20, 0, 160)], (2, 8)), [0.5])


def test_tissue_fraction_rejects_bad_boxes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        tissue_fraction(np.ones((4, 4), bool), [(0, 1, 2)], 1)
    with pytest.raises(ValueError, match="downsample"):
        tissue_fraction(np.ones((4, 4), bool), [(0, 1, 0, 1)], 0)


def test_tile_filter_call_forms():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4] = True
    keep = tile_filter_from_mask(mask, downsample=32, min_fraction=0.5)
    assert isinstance(keep, TileFilter)
    assert keep((0, 128, 0, 128)) and keep(0, 128, 0, 128)
    assert keep(64, 192, 0, 256)  # exactly half
    assert not keep((128, 256, 0, 256))
    assert keep.fraction((0, 256, 0, 256)) == pytest.approx(0.5)
    np.testing.assert_allclose(keep.fractions([(0, 128, 0, 256), (128, 256, 0, 256)]), [1, 0])
    with pytest.raises(ValueError, match="min_fraction"):
        TileFilter(mask, 32, min_fraction=1.5)


def test_lowres_level_computes_only_that_level(pyramid):
    levels, computed = pyramid
    image, downsample = lowres_level(levels, max_size=256)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert downsample == (16.0, 16.0)
    assert set(computed) == {16}
    assert select_level(levels, 256) == 4 and select_level(levels, 4096) == 0
    assert select_level(levels, 100) is None


def test_lowres_level_block_averages_when_every_level_is_too_big(pyramid):
    levels, computed = pyramid
    image, downsample = lowres_level(levels[:4], max_size=200)  # smallest is 512 x 512
    assert image.shape == (170, 170, 3) and image.dtype == np.uint8
    assert downsample == pytest.approx((4096 / 170, 4096 / 170))
    assert set(computed) == {8}
    expected = levels[3][:6, :6].compute().astype(float).reshape(2, 3, 2, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(image[:2, :2], expected, atol=0.51)


def test_background_tiles_rejected_tissue_kept(pyramid):
    levels, computed = pyramid
    mask, downsample = slide_tissue_mask(levels, max_size=256)
    keep = tile_filter_from_mask(mask, downsample)
    # Ground truth from a separate rendering: pixels at the background colour are background.
    truth = he_region(0, 0, 128, 128, downsample=32, size=SIZE)
    is_background = np.all(np.abs(truth.astype(int) - BACKGROUND) <= 2, axis=-1)
    tiles = is_background.reshape(16, 8, 16, 8).swapaxes(1, 2).reshape(16, 16, 64)
    empty, full = tiles.all(axis=-1), ~tiles.any(axis=-1)
    assert empty.sum() >= 20 and full.sum() >= 60
    for row in range(16):
        for col in range(16):
            box = (row * 256, (row + 1) * 256, col * 256, (col + 1) * 256)
            if empty[row, col]:
                assert not keep(box), box
            elif full[row, col]:
                assert keep(box), box
    assert set(computed) == {16}



def test_mask_at_a_fixed_pixel_size_does_not_depend_on_the_pyramid(pyramid):
    levels, computed = pyramid  # 0.25 µm/px, levels 1-16
    full, downsample = slide_tissue_mask_at(levels, base_mpp=0.25, mpp=4.0)
    assert downsample == (16.0, 16.0) and set(computed) == {16}  # read that level directly
    computed.clear()
    short, short_downsample = slide_tissue_mask_at(levels[:3], base_mpp=0.25, mpp=4.0)
    assert short_downsample == (16.0, 16.0) and set(computed) == {4}  # 4x block mean of 1:4
    assert short.shape == full.shape and (short == full).mean() > 0.97  # edges differ a little
    boxes = [(y, y + 256, x, x + 256) for y in range(0, 4096, 256) for x in range(0, 4096, 256)]
    keep = [tile_filter_from_mask(m, 16.0).fractions(boxes) >= 0.05 for m in (full, short)]
    assert (keep[0] == keep[1]).mean() >= 0.98  # the tiles analysed are (nearly) the same



class _CountingLevel:
    """An array-like slide level (not dask) that records the size of every read."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, 3
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.array[key]
        self.reads.append(out.size)
        return out


def test_mask_at_reads_a_plain_level_block_by_block(pyramid):
    levels, _ = pyramid
    plain = _CountingLevel(np.asarray(levels[1]))  # 2048 x 2048, 0.5 µm/px here
    mask, downsample = slide_tissue_mask_at([levels[0], plain], base_mpp=0.25, mpp=4.0)
    assert downsample == (16.0, 16.0) and mask.shape == (256, 256)
    assert len(plain.reads) > 1 and max(plain.reads) < plain.array.size  # never all at once
    full, _ = slide_tissue_mask_at(levels, base_mpp=0.25, mpp=4.0)
    assert (mask == full).mean() > 0.97

def test_mask_at_is_capped_in_size_and_checks_its_pixel_sizes(pyramid):
    levels, _ = pyramid
    mask, downsample = slide_tissue_mask_at(levels, base_mpp=0.25, mpp=1.0, max_size=512)
    assert mask.shape == (512, 512) and downsample == (8.0, 8.0)
    with pytest.raises(ValueError, match="positive"):
        slide_tissue_mask_at(levels, base_mpp=0.0)

@pytest.fixture(scope="module")
def slide_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("slide") / "he.tif"
    return str(write_synthetic_slide(path, size=(1024, 1024), levels=3, compression="zlib"))


def test_slide_file_tissue_mask(slide_file):
    image = read_slide(slide_file)
    mask, downsample = slide_tissue_mask(image.levels, max_size=256)
    assert mask.shape == (256, 256) and downsample == (4.0, 4.0)
    corners = [mask[:20, :20], mask[:20, -20:], mask[-20:, :20], mask[-20:, -20:]]
    assert not any(corner.any() for corner in corners)
    assert mask[100:156, 100:156].mean() > 0.9
    fractions = tissue_fraction(mask, [(0, 128, 0, 128), (448, 576, 448, 576)], downsample)
    assert fractions[0] == 0 and fractions[1] > 0.9
