"""convert_kaggle_lgg: synthetic kaggle_3m layouts and the real sample slices."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_neuroseg.dataset import DatasetError, convert_kaggle_lgg
from napari_neuroseg.dataset.convert_kaggle import lgg_patient_id


def _write_study(folder, study, numbers, lesion_on=()):
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        image = np.full((16, 16, 3), n, np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        if n in lesion_on:
            mask[4:8, 4:8] = 255
        tifffile.imwrite(folder / f"{study}_{n}.tif", image)
        tifffile.imwrite(folder / f"{study}_{n}_mask.tif", mask)


def test_patient_folders_become_mri_items(tmp_path):
    src = tmp_path / "kaggle_3m"
    _write_study(src / "TCGA_CS_4941_19960909", "TCGA_CS_4941_19960909", [1, 2, 10], {10})
    _write_study(src / "TCGA_HT_7690_19960312", "TCGA_HT_7690_19960312", [3])
    (src / "data.csv").write_text("Patient,death01\n")
    ds = convert_kaggle_lgg(src, tmp_path / "ds")
    assert ds.task == "mri" and ds.class_map == {0: "background", 1: "FLAIR abnormality"}
    assert [i.slice_index for i in ds] == [1, 2, 10, 3]  # numeric, not string, order
    assert ds.patients() == {"TCGA_CS_4941": ["TCGA_CS_4941_19960909_1",
                                              "TCGA_CS_4941_19960909_2",
                                              "TCGA_CS_4941_19960909_10"],
                             "TCGA_HT_7690": ["TCGA_HT_7690_19960312_3"]}
    lesion = ds.read_mask("TCGA_CS_4941_19960909_10")
    assert lesion.max() == 1 and lesion.sum() == 16
    np.testing.assert_array_equal(ds.read_image("TCGA_CS_4941_19960909_2"),
                                  np.full((16, 16, 3), 2, np.uint8))
    again = convert_kaggle_lgg(src, tmp_path / "ds")  # idempotent
    assert [i.id for i in again] == [i.id for i in ds] and again.orphan_files() == []


def test_flat_folder_and_errors(tmp_path):
    _write_study(tmp_path / "flat", "TCGA_DU_5849_19950405", [5, 6])
    assert len(convert_kaggle_lgg(tmp_path / "flat", tmp_path / "ds")) == 2
    (tmp_path / "flat" / "TCGA_DU_5849_19950405_6_mask.tif").unlink()
    with pytest.raises(DatasetError, match=r"without a _mask.tif"):
        convert_kaggle_lgg(tmp_path / "flat", tmp_path / "ds2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no Kaggle LGG slices"):
        convert_kaggle_lgg(tmp_path / "empty", tmp_path / "ds3")


def test_patient_id_from_study():
    assert lgg_patient_id("TCGA_CS_4942_19970222") == "TCGA_CS_4942"
    assert lgg_patient_id("study7") == "study7"


@pytest.mark.realdata
def test_real_lgg_slices(shared_data, tmp_path):
    ds = convert_kaggle_lgg(shared_data / "lgg_mri_slices", tmp_path / "ds")
    assert len(ds) == 24 and len(ds.patients()) == 21
    counts = ds.class_pixel_counts()
    assert sum(1 for c in counts.values() if c[1] > 0) == 6
    assert all(i.shape == (256, 256, 3) for i in ds)
