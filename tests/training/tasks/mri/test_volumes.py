"""Per-volume MRI scores: slices back at their numbers, the 3-D clean-up, the four metrics."""

import numpy as np
import pytest
import tifffile

from napari_neuroseg.dataset import convert_kaggle_lgg
from training.tasks.mri.volumes import PostProcess, patient_volumes, score_volumes

STUDY = "TCGA_AA_0001_19990101"


@pytest.fixture
def gapped(tmp_path):
    """One study with slices 1, 2, 5, 6 (3-4 dropped): a lesion on 5-6, nothing elsewhere."""
    folder = tmp_path / "kaggle" / STUDY
    folder.mkdir(parents=True)
    for n in (1, 2, 5, 6):
        mask = np.zeros((16, 16), np.uint8)
        if n in (5, 6):
            mask[4:8, 4:8] = 255
        tifffile.imwrite(folder / f"{STUDY}_{n}.tif", np.full((16, 16, 3), n, np.uint8))
        tifffile.imwrite(folder / f"{STUDY}_{n}_mask.tif", mask)
    return convert_kaggle_lgg(tmp_path / "kaggle", tmp_path / "ds")


def test_slices_sit_at_their_numbers(gapped):
    (volume,) = patient_volumes(gapped)
    assert volume.patient == STUDY and volume.depth == 6
    assert volume.planes.tolist() == [0, 1, 4, 5]
    assert [gapped.items[i].slice_index for i in volume.items] == [1, 2, 5, 6]
    assert volume.truth.shape == (4, 16, 16)
    assert volume.truth.reshape(4, -1).any(1).tolist() == [False, False, True, True]
    placed = volume.place(np.ones((4, 2, 2), np.float32))
    assert placed[:, 0, 0].tolist() == [1, 1, 0, 0, 1, 1]


def test_clean_up_uses_true_distances_along_z(gapped):
    """A speck on slice 2 is alone (planes 2-3 are the gap) and goes; the lesion on 5-6
    spans two planes and stays; 16-voxel specks go with min_voxels 20."""
    (volume,) = patient_volumes(gapped)
    scores = np.zeros((4, 16, 16), np.float32)
    scores[1, 10:12, 10:12] = 0.9            # slice 2: single-slice speck, 4 voxels
    scores[2:4, 4:8, 4:8] = 0.8              # slices 5-6: the lesion, 32 voxels
    raw = score_volumes([volume], lambda v: scores, PostProcess(0.5))
    assert raw["fp_empty_slices"] == 1 and raw["empty_slices"] == 2
    assert raw["fp_empty_share"] == 0.5
    assert raw["volume_dice"] == pytest.approx(2 * 32 / (36 + 32))
    cleaned = score_volumes([volume], lambda v: scores, PostProcess(0.5, 0, True))
    assert cleaned["fp_empty_slices"] == 0 and cleaned["volume_dice"] == 1.0
    assert score_volumes([volume], lambda v: scores, PostProcess(0.5, 40, False))[
        "volume_dice"] == 0.0                   # everything is smaller than 40 voxels
    high = score_volumes([volume], lambda v: scores, PostProcess(0.85))
    assert high["missed_tumour_slices"] == 2 and high["tumour_slices"] == 2
    assert high["slice_dice_tumour"] == 0.0


def test_per_slice_scores_and_the_item_mapping(gapped):
    (volume,) = patient_volumes(gapped)
    by_item = {i: np.zeros((16, 16), np.float32) for i in volume.items}
    half = np.zeros((16, 16), np.float32)
    half[4:8, 4:6] = 1.0                     # half of the lesion on slice 5 only
    by_item[volume.items[2]] = half
    result = score_volumes([volume], by_item, PostProcess())
    assert result["missed_tumour_slices"] == 1           # slice 6
    assert result["slice_dice_tumour"] == pytest.approx((2 * 8 / 24 + 0.0) / 2)
    assert result["volume_dice_by_patient"] == {STUDY: pytest.approx(2 * 8 / 40)}
    assert (result["predicted_voxels"], result["reference_voxels"]) == (8, 32)


def test_an_empty_volume_predicted_empty_scores_one(gapped):
    (volume,) = patient_volumes(gapped, [0, 1])       # slices 1 and 2, no lesion
    assert volume.depth == 2
    result = score_volumes([volume], lambda v: np.zeros((2, 16, 16)), PostProcess())
    assert result["volume_dice"] == 1.0 and result["tumour_slices"] == 0


def test_post_process_describes_itself():
    assert PostProcess().describe() == ">= 0.5, no clean-up"
    assert PostProcess(0.4, 200, True).describe() == (
        ">= 0.4, drop < 200 voxels and single-slice components")
    assert PostProcess(0.4, 200, True).as_dict() == {
        "threshold": 0.4, "min_voxels": 200, "drop_single_slice": True}
