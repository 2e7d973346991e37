"""Synthetic brain MRI: the phantom, its Kaggle LGG layout and the sample folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_neuroseg.io.mri import read_lgg_folder, read_nifti, read_tiff_stack
from napari_neuroseg.samples.mri import (
    SAMPLE_PATIENT_ID,
    make_sample_mri,
    mri_phantom,
    write_lgg_patient,
    write_nifti_volume,
    write_tiff_stack,
)


def test_phantom_has_a_flair_bright_lesion_on_a_few_slices():
    image, mask = mri_phantom(n_slices=20, size=96, seed=3)
    assert image.shape == (20, 96, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (20, 96, 96) and set(np.unique(mask)) == {0, 255}
    lesion_slices = int(mask.any(axis=(1, 2)).sum())
    assert 2 <= lesion_slices <= 8
    lesion = mask == 255
    brain = (image[..., 1] > 0) & ~lesion
    flair, pre = image[..., 1], image[..., 0]
    assert flair[lesion].mean() > flair[brain].mean() + 60
    assert pre[lesion].mean() < pre[brain].mean()
    assert not image[:, 0, 0].any()  # skull-stripped: background is 0


def test_phantom_is_deterministic():
    a, _ = mri_phantom(4, 32, seed=1)
    b, _ = mri_phantom(4, 32, seed=1)
    c, _ = mri_phantom(4, 32, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="n_slices"):
        mri_phantom(0, 32)


def test_write_lgg_patient_layout(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id="TCGA_ZZ_0001_20000101", n_slices=11, size=32)
    assert folder == tmp_path / "TCGA_ZZ_0001_20000101"
    names = sorted(os.listdir(folder))
    assert len(names) == 22
    assert names[:3] == [
        "TCGA_ZZ_0001_20000101_1.tif",
        "TCGA_ZZ_0001_20000101_10.tif",
        "TCGA_ZZ_0001_20000101_10_mask.tif",
    ]
    with tifffile.TiffFile(folder / "TCGA_ZZ_0001_20000101_5.tif") as tif:
        assert tif.pages[0].shape == (32, 32, 3)
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    mask = tifffile.imread(folder / "TCGA_ZZ_0001_20000101_5_mask.tif")
    assert mask.shape == (32, 32) and mask.dtype == np.uint8
    image, _ = mri_phantom(11, 32, seed=0)
    np.testing.assert_array_equal(
        tifffile.imread(folder / "TCGA_ZZ_0001_20000101_10.tif"), image[9]
    )
    assert os.listdir(tmp_path) == ["TCGA_ZZ_0001_20000101"]  # no temporary left


def test_make_sample_mri_writes_once(tmp_path):
    folder = make_sample_mri(tmp_path / "cache")
    assert folder.name == SAMPLE_PATIENT_ID
    stamp = (folder / f"{SAMPLE_PATIENT_ID}_1.tif").stat().st_mtime_ns
    assert make_sample_mri(tmp_path / "cache") == folder
    assert (folder / f"{SAMPLE_PATIENT_ID}_1.tif").stat().st_mtime_ns == stamp
    image, labels = read_lgg_folder(folder)
    assert image.shape == (24, 256, 256, 3)
    assert labels.levels[0].compute().any()


def test_make_sample_mri_repairs_an_incomplete_folder(tmp_path):
    folder = make_sample_mri(tmp_path)
    (folder / f"{SAMPLE_PATIENT_ID}_7_mask.tif").unlink()
    assert make_sample_mri(tmp_path) == folder
    assert len(os.listdir(folder)) == 48


def test_nifti_helper_matches_the_phantom(tmp_path):
    path = write_nifti_volume(tmp_path / "p.nii.gz", n_slices=6, size=24, zooms=(0.8, 0.8, 2.0))
    image = read_nifti(path)
    flair = mri_phantom(6, 24, seed=0)[0][..., 1]
    np.testing.assert_array_equal(image.levels[0].compute(), flair)
    assert image.scale == pytest.approx((2.0, 0.8, 0.8))


@pytest.mark.parametrize("imagej", [True, False])
def test_tiff_stack_helper(tmp_path, imagej):
    path = write_tiff_stack(tmp_path / "s.tif", n_slices=5, size=24, channels=3, imagej=imagej)
    image = read_tiff_stack(path)
    assert image.shape == (5, 24, 24, 3)
    rgb_samples_together = (3,) if not imagej else (1, 1, 1)
    assert image.levels[0].chunks == ((1,) * 5, (24,), (24,), rgb_samples_together)
    assert image.scale == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(image.levels[0].compute(), mri_phantom(5, 24, seed=0)[0])
