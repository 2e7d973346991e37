"""Section crops of the ``tissue`` task: downscaling, the crop grid, samples and counts."""

import numpy as np
import pytest
import torch

from napari_neuroseg.dataset import Dataset, DatasetWriter
from napari_neuroseg.models.registry import ModelRegistry
from training.tasks._common import DataError
from training.tasks.tissue.crops import SectionCrops, crop_origins, downscale
from training.tasks.tissue.data import IGNORE_INDEX, TilePrep


def test_downscale_averages_the_image_and_takes_the_blocks_majority_class():
    image = np.zeros((4, 6, 3), np.uint8)
    image[:2, :2] = (10, 20, 30)
    image[:2, 2:4] = ((0, 0, 0), (100, 100, 100))  # block mean of 0 and 100 (2 pixels each)
    mask = np.zeros((4, 6), np.int64)
    mask[:2, :2] = [[3, 3], [3, 1]]  # 3 wins the block
    mask[2:, 4:] = IGNORE_INDEX
    small, labels = downscale(image, mask, 2)
    assert small.shape == (2, 3, 3) and labels.shape == (2, 3)
    assert tuple(small[0, 0]) == (10, 20, 30) and tuple(small[0, 1]) == (50, 50, 50)
    assert labels[0, 0] == 3 and labels[1, 2] == IGNORE_INDEX and labels[1, 0] == 0
    same_image, same_mask = downscale(image, mask, 1)
    assert same_image is image and same_mask is mask


def test_downscale_drops_the_rows_that_do_not_fill_a_block():
    small, labels = downscale(np.zeros((5, 7, 3), np.uint8), np.zeros((5, 7), np.int64), 2)
    assert small.shape == (2, 3, 3) and labels.shape == (2, 3)


def test_crop_grid_covers_the_section_and_ends_flush_with_its_edges():
    origins = crop_origins((512, 300), 224, 144)
    ys, xs = sorted({y for y, _ in origins}), sorted({x for _, x in origins})
    assert ys == [0, 144, 288] and xs == [0, 76]
    assert len(origins) == 6
    assert crop_origins((224, 224), 224, 112) == [(0, 0)]
    with pytest.raises(DataError, match="smaller than the 224 px crop"):
        crop_origins((200, 512), 224, 112)


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Two 64x64 sections: left half class 1 on section 0, a 2 (rare) square on section 1."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("sections") / "d"
    classes = {0: "background", 1: "cellular tumour", 2: "infiltrating tumour"}
    with DatasetWriter(root, "tissue", "HE", classes) as writer:
        for k in range(2):
            mask = np.zeros((64, 64), np.uint8)
            mask[:, :32] = 1
            if k == 1:
                mask[40:56, 40:56] = 2
            image = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
            writer.add(image, mask, patient_id="P", slide_id=f"S{k}", mpp=5.0)
    return Dataset.open(root)


def test_crops_count_classes_at_their_grid_positions(sections):
    spec = ModelRegistry(bundled=False).get("gbm-tissue-8")
    prep = TilePrep(sections, mode="off")
    crops = SectionCrops(prep, [0, 1], spec, factor=2, crop=16, stride=16)
    assert len(crops) == 2 * 4  # 32x32 after halving: a 2x2 grid per section
    counts = crops.class_counts(3)
    assert counts.shape == (8, 3) and (counts.sum(1) == 16 * 16).all()
    assert counts[:4, 2].sum() == 0 and counts[4:, 2].sum() == 8 * 8  # the rare square
    x, y = crops[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.max()) <= 1.0  # the spec's /255 normalisation


def test_augmented_crops_move_but_stay_inside_the_section(sections):
    spec = ModelRegistry(bundled=False).get("gbm-tissue-8")
    crops = SectionCrops(TilePrep(sections, mode="off"), [1], spec, crop=32, stride=16,
                         augment=True)
    torch.manual_seed(0)
    seen = {crops._shifted(0, 16, 16) for _ in range(50)}
    assert len(seen) > 5
    assert all(0 <= y <= 32 and 0 <= x <= 32 and abs(y - 16) <= 8 for y, x in seen)
    assert crops[3][0].shape == (3, 32, 32)


def test_whole_sections_are_cut_to_the_networks_multiple(sections):
    spec = ModelRegistry(bundled=False).get("gbm-tissue-8")
    whole = SectionCrops(TilePrep(sections, mode="off"), [0, 1], spec, factor=3,
                         size_multiple=8)
    assert len(whole) == 2 and whole[1][0].shape == (3, 16, 16)  # 64 // 3 = 21 -> 16
    with pytest.raises(ValueError, match="positive integer"):
        SectionCrops(TilePrep(sections, mode="off"), [0], spec, factor=0)
