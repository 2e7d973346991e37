"""convert_ct_labels: a labels CSV beside synthetic DICOM series."""

from __future__ import annotations

import numpy as np
import pytest

from napari_neuroseg.dataset import DatasetError, convert_ct_labels
from napari_neuroseg.dataset.convert_ct import match_folders, read_patient_labels
from napari_neuroseg.samples.ct import write_ct_series


@pytest.fixture(scope="module")
def cts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    for k, name in enumerate(["patient_001", "patient_002"]):
        write_ct_series(root / "CTs" / name, n_slices=3, size=16, seed=k, lesion=k == 0)
    return root


def test_slices_carry_patient_labels(cts, tmp_path):
    csv = cts / "labels1.csv"
    csv.write_text("ID,Label\npatient_001,1\npatient_002,0\n")
    ds = convert_ct_labels(csv, cts / "CTs", tmp_path / "ds")
    assert ds.task == "ct" and len(ds) == 6
    assert {p: [ds.item(i).label for i in ids] for p, ids in ds.patients().items()} == {
        "patient_001": [1, 1, 1], "patient_002": [0, 0, 0]}
    first = ds.items[0]
    assert first.slice_index == 0 and first.source["path"].endswith(".dcm")
    assert first.region["spacing_mm"] == pytest.approx([5.0, 0.7, 0.7])
    image = ds.read_image(first)
    assert image.dtype == np.int16 and image.shape == (16, 16) and image.min() < -500
    assert len(convert_ct_labels(csv, cts / "CTs", tmp_path / "ds")) == 6  # idempotent


def test_tolerant_csv_and_folder_matching(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("\ufeffscan , Patient ,metastasis\nx,7,yes\ny,12,False\n\n")
    assert read_patient_labels(csv) == {"7": 1, "12": 0}
    folders = [tmp_path / "patient_007", tmp_path / "patient_012", tmp_path / "Other"]
    assert match_folders(["7", "12", "other", "99"], folders) == {
        "7": folders[0], "12": folders[1], "other": folders[2]}


def test_bad_inputs(cts, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("patient,label\npatient_001,maybe\n")
    with pytest.raises(DatasetError, match=r"bad.csv:2: label 'maybe'"):
        convert_ct_labels(csv, cts / "CTs", tmp_path / "ds")
    csv.write_text("patient,label\npatient_001,1\npatient_001,0\n")
    with pytest.raises(DatasetError, match="labels 0 and 1"):
        read_patient_labels(csv)
    csv.write_text("patient,label\npatient_001,1\npatient_404,0\n")
    with pytest.raises(DatasetError, match=r"no folder.*patient_404"):
        convert_ct_labels(csv, cts / "CTs", tmp_path / "ds")
    with pytest.warns(UserWarning, match="skipping 1 patient"):
        ds = convert_ct_labels(csv, cts / "CTs", tmp_path / "ds", skip_missing=True)
    assert len(ds) == 3
