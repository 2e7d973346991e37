"""NIfTI labels written back in the geometry of their NIfTI or DICOM source."""

import nibabel as nib
import numpy as np
import pydicom
import pytest

from napari_neuroseg.io._nifti import read_nifti
from napari_neuroseg.io.dicom import read_dicom
from napari_neuroseg.io.nifti_writer import geometry_metadata, write_nifti_labels
from napari_neuroseg.io.writers import WriterError
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.mri import write_nifti_volume


def _air_volume(tmp_path, name="air.nii.gz"):
    """A NIfTI file whose voxel axes point Anterior, Inferior, Right (all reoriented)."""
    data = np.arange(5 * 4 * 6, dtype=np.int16).reshape(5, 4, 6)
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = 1.5, -3.0, 0.8, 1.0
    affine[:3, 3] = (10.0, -20.0, 30.0)
    return write_nifti_volume(tmp_path / name, data=data, affine=affine), data, affine


@pytest.mark.parametrize("from_metadata", [True, False])
def test_labels_over_a_reoriented_nifti_keep_its_affine_and_voxel_order(tmp_path, from_metadata):
    path, data, affine = _air_volume(tmp_path)
    image = read_nifti(path)
    labels = (image.levels[0].compute() % 7 == 0).astype(np.uint8) * 3  # display frame
    meta = {"source": image.source, **image.metadata}
    geometry = geometry_metadata(meta) if from_metadata else {"source": image.source}
    out = write_nifti_labels(tmp_path / "mask.nii.gz", labels, geometry=geometry,
                             scale=image.scale, translate=image.translate)
    written = nib.load(out[0])
    np.testing.assert_allclose(written.affine, affine)
    assert written.shape == data.shape
    # every labelled voxel is where the source value was a multiple of 7, in the file's order
    np.testing.assert_array_equal(np.asarray(written.dataobj), (data % 7 == 0) * 3)
    assert written.get_data_dtype() == np.uint8
    assert written.header["sform_code"] == nib.load(path).header["sform_code"]


def test_written_labels_reopen_on_top_of_their_image(tmp_path):
    path, _, _ = _air_volume(tmp_path, "v.nii")
    image = read_nifti(path)
    labels = np.zeros(image.shape, np.int32)
    labels[1, 2:4, 1:5] = 70000  # does not fit uint16: stays int32
    out = write_nifti_labels(tmp_path / "l.nii", labels,
                             geometry={"source": image.source, **image.metadata})
    again = read_nifti(out[0])
    np.testing.assert_array_equal(again.levels[0].compute(), labels)
    assert again.scale == pytest.approx(image.scale)
    assert again.translate == pytest.approx(image.translate)


def test_labels_over_a_dicom_series_get_its_patient_geometry(tmp_path):
    files = write_ct_series(tmp_path / "ct", n_slices=5, size=16, spacing=(4.0, 0.5, 0.6))
    (image,) = read_dicom(tmp_path / "ct")
    labels = np.zeros(image.shape, np.uint8)
    labels[2, 3, 7] = 1
    out = write_nifti_labels(tmp_path / "ct.nii.gz", labels, geometry=image.metadata,
                             scale=image.scale, translate=image.translate)
    written = nib.load(out[0])
    assert written.shape == (16, 16, 5)  # (x, y, z)
    assert np.argwhere(np.asarray(written.dataobj)).tolist() == [[7, 3, 2]]
    third = pydicom.dcmread(files[2])
    ipp = np.array([float(v) for v in third.ImagePositionPatient])
    row = np.array([float(v) for v in third.ImageOrientationPatient[:3]])
    col = np.array([float(v) for v in third.ImageOrientationPatient[3:]])
    dy, dx = (float(v) for v in third.PixelSpacing)
    lps = ipp + 7 * dx * row + 3 * dy * col
    ras = written.affine @ [7, 3, 2, 1]
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
    assert written.header["sform_code"] == 1


def test_labels_without_geometry_keep_the_voxel_size(tmp_path):
    labels = np.ones((3, 4, 5), bool)
    out = write_nifti_labels(tmp_path / "m.nii", labels, scale=(2.0, 0.5, 0.25))
    written = nib.load(out[0])
    assert written.shape == (5, 4, 3)
    assert written.header.get_zooms() == pytest.approx((0.25, 0.5, 2.0))
    assert written.header["sform_code"] == 0 and written.header["qform_code"] == 0


def test_errors_name_the_file_and_write_nothing(tmp_path):
    path, _, _ = _air_volume(tmp_path)
    target = tmp_path / "bad.nii.gz"
    with pytest.raises(WriterError, match=r"bad\.nii\.gz.*do not cover the source volume"):
        write_nifti_labels(target, np.zeros((2, 2, 2), np.uint8), geometry={"source": str(path)})
    with pytest.raises(WriterError, match="integers"):
        write_nifti_labels(target, np.zeros((2, 2, 2), np.float32))
    with pytest.raises(WriterError, match=r"use \.nii"):
        write_nifti_labels(tmp_path / "m.tif", np.zeros((2, 2, 2), np.uint8))
    assert list(tmp_path.glob("bad*")) == [] and not list(tmp_path.glob(".*tmp"))
