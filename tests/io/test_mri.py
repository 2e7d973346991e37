"""MRI readers: TIFF stacks, NIfTI volumes, Kaggle LGG folders."""

from __future__ import annotations

import gzip
import os
import shutil
import struct

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_neuroseg.io._types import ReaderError
from napari_neuroseg.io.layers import to_layer_data
from napari_neuroseg.io.mri import (
    is_lgg_folder,
    is_lgg_slice,
    is_nifti,
    read_lgg_folder,
    read_nifti,
    read_tiff_stack,
)
from napari_neuroseg.samples.mri import write_lgg_patient, write_nifti_volume, write_tiff_stack

PID = "TCGA_XX_0000_20000101"


def _ramp(shape, dtype=np.uint16):
    return (np.arange(np.prod(shape)) % 1000).astype(dtype).reshape(shape)


# --- TIFF stacks -------------------------------------------------------------------------


def test_tiff_stack_imagej_scale_values_and_chunks(tmp_path):
    data = _ramp((7, 20, 30))
    path = write_tiff_stack(tmp_path / "s.tif", data=data, spacing=(2.0, 0.5, 0.25))
    image = read_tiff_stack(path)
    assert image.axes == "zyx"
    assert image.scale == pytest.approx((2.0, 0.5, 0.25))
    assert (image.unit, image.modality, image.name) == ("mm", "MR", "s")
    assert image.warnings == []
    assert image.metadata["voxel_size_source"] == "imagej"
    array = image.levels[0]
    assert isinstance(array, da.Array)
    assert array.chunks == ((1,) * 7, (20,), (30,))
    np.testing.assert_array_equal(array[4].compute(), data[4])
    np.testing.assert_array_equal(array.compute(), data)


def test_tiff_stack_imagej_microns_are_converted_to_mm(tmp_path):
    path = write_tiff_stack(
        tmp_path / "um.tif", data=_ramp((3, 8, 8)), spacing=(2000.0, 500.0, 250.0), unit="micron"
    )
    assert read_tiff_stack(path).scale == pytest.approx((2.0, 0.5, 0.25))


def test_tiff_stack_channels_go_last(tmp_path):
    data = _ramp((5, 16, 12, 3), np.uint8)
    image = read_tiff_stack(write_tiff_stack(tmp_path / "c.tif", data=data))
    assert image.metadata["tiff_axes"] == "ZCYX"  # ImageJ channels are separate pages
    assert image.axes == "zyxc"
    assert image.shape == (5, 16, 12, 3)
    assert image.levels[0].chunks == ((1,) * 5, (16,), (12,), (1, 1, 1))
    assert image.display["channel_axis"] == 3
    assert image.display["name"] == ["c ch0", "c ch1", "c ch2"]
    np.testing.assert_array_equal(image.levels[0].compute(), data)
    _, kwargs, kind = to_layer_data([image])[0]
    assert kind == "image" and kwargs["scale"] == pytest.approx((2.0, 0.5, 0.5))


def test_tiff_stack_plain_tifffile_metadata(tmp_path):
    data = _ramp((4, 10, 10))
    path = write_tiff_stack(tmp_path / "p.tif", data=data, imagej=False, spacing=(3.0, 0.2, 0.4))
    image = read_tiff_stack(path)
    assert image.scale == pytest.approx((3.0, 0.2, 0.4))
    assert image.metadata["voxel_size_source"] == "tifffile"
    np.testing.assert_array_equal(image.levels[0].compute(), data)


def test_tiff_stack_without_size_warns(tmp_path):
    path = write_tiff_stack(tmp_path / "n.tif", data=_ramp((3, 8, 8)), imagej=False, spacing=None)
    image = read_tiff_stack(path)
    assert image.scale == (1.0, 1.0, 1.0)
    assert len(image.warnings) == 2
    assert all("voxel size unknown" in w for w in image.warnings)


def test_single_page_stays_2d(tmp_path):
    data = _ramp((20, 30))
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, data, resolution=(40.0, 20.0), resolutionunit="CENTIMETER")
    image = read_tiff_stack(path)
    assert image.axes == "yx"
    assert image.scale == pytest.approx((0.5, 0.25))  # 20 and 40 px per cm
    assert image.warnings == []
    np.testing.assert_array_equal(image.levels[0].compute(), data)


@pytest.mark.parametrize("dpi", [1.0, 72.0])
def test_default_resolution_tags_are_not_a_voxel_size(tmp_path, dpi):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, _ramp((2, 8, 8)), resolution=(dpi, dpi), resolutionunit="INCH")
    image = read_tiff_stack(path)
    assert image.scale == (1.0, 1.0, 1.0)
    assert image.warnings[0].startswith("voxel size unknown")


@pytest.mark.parametrize("imagej", [True, False])
def test_truncated_tiff_is_a_reader_error(tmp_path, imagej):
    path = tmp_path / "cut.tif"
    data = _ramp((20, 64, 64))
    if imagej:
        tifffile.imwrite(path, data, imagej=True)
    else:
        tifffile.imwrite(path, data, compression="zlib", photometric="minisblack")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ReaderError, match="truncated") as info:
        read_tiff_stack(path)
    assert str(path) in str(info.value)


def test_not_a_tiff_is_a_reader_error(tmp_path):
    path = tmp_path / "text.tif"
    path.write_text("hello")
    with pytest.raises(ReaderError, match="not a readable TIFF") as info:
        read_tiff_stack(path)
    assert info.value.path == str(path)


def test_corrupt_pixel_data_fails_lazily_naming_the_file(tmp_path):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, _ramp((4, 32, 32)), compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[3].dataoffsets[0]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    image = read_tiff_stack(path)  # the header is fine: nothing decoded yet
    np.testing.assert_array_equal(image.levels[0][0].compute(), _ramp((4, 32, 32))[0])
    with pytest.raises(ReaderError, match="cannot decode") as info:
        image.levels[0][3].compute()
    assert str(path) in str(info.value)


# --- NIfTI -------------------------------------------------------------------------------


def _display_volume():
    """Distinct values in the display frame (z: S, y: P, x: L)."""
    return np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)


def test_nifti_permuted_and_flipped_is_shown_in_display_order(tmp_path):
    vol = _display_volume()  # (S, P, L)
    # File voxel axes point Anterior, Inferior, Right: flip all three, then swap the first two.
    data = vol[::-1, ::-1, ::-1].transpose(1, 0, 2)  # (A, I, R)
    zooms = (1.5, 3.0, 0.8)  # along A, I, R
    affine = np.zeros((4, 4))
    affine[1, 0] = zooms[0]  # i -> +A
    affine[2, 1] = -zooms[1]  # j -> -S (Inferior)
    affine[0, 2] = zooms[2]  # k -> +R
    affine[:3, 3] = (10.0, -20.0, 30.0)
    affine[3, 3] = 1
    path = write_nifti_volume(tmp_path / "air.nii", data=data, affine=affine)
    image = read_nifti(path)
    assert image.metadata["orientation"] == "AIR"
    assert image.axes == "zyx"
    np.testing.assert_array_equal(image.levels[0].compute(), vol)
    assert image.scale == pytest.approx((3.0, 1.5, 0.8))  # S, P, L
    assert image.levels[0].chunks[0] == (1, 1, 1, 1)
    # Display voxel (0, 0, 0) is file voxel (i=4, j=3, k=5).
    ras = affine @ [4, 3, 5, 1]
    assert image.translate == pytest.approx((ras[2], -ras[1], -ras[0]))
    assert image.warnings == []
    assert image.metadata["original_shape"] == [5, 4, 6]


def test_nifti_gz_ras_roundtrip(tmp_path):
    path = write_nifti_volume(tmp_path / "v.nii.gz", n_slices=6, size=20, zooms=(0.9, 0.9, 3.0))
    image = read_nifti(path)
    assert image.name == "v"
    assert image.shape == (6, 20, 20)
    assert image.scale == pytest.approx((3.0, 0.9, 0.9))
    raw = np.asanyarray(nib.load(path).dataobj)  # (R, A, S)
    np.testing.assert_array_equal(image.levels[0].compute(), raw.transpose(2, 1, 0)[:, ::-1, ::-1])
    assert image.metadata["dtype"] == "int16"


def test_nifti_4d_time_axis_first(tmp_path):
    data = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2)
    path = write_nifti_volume(tmp_path / "t.nii", data=data, affine=np.diag([2.0, 2.0, 4.0, 1]))
    image = read_nifti(path)
    assert image.axes == "tzyx"
    assert image.shape == (2, 5, 4, 3)
    assert image.scale == pytest.approx((1.0, 4.0, 2.0, 2.0))
    assert image.levels[0].chunks[:2] == ((1, 1), (1,) * 5)
    expected = data.transpose(3, 2, 1, 0)[:, :, ::-1, ::-1]
    np.testing.assert_array_equal(image.levels[0].compute(), expected)


def test_nifti_scaling_gives_floats(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    path = write_nifti_volume(tmp_path / "s.nii", data=data, affine=np.eye(4))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<ff", raw, 112, 2.0, 10.0)  # scl_slope, scl_inter
    path.write_bytes(bytes(raw))
    image = read_nifti(path)
    assert image.levels[0].dtype.kind == "f"
    np.testing.assert_allclose(image.levels[0].compute(), data.T[:, ::-1, ::-1] * 2.0 + 10.0)


def test_nifti_oblique_and_unoriented_warn(tmp_path):
    angle = np.radians(10)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    oblique = read_nifti(write_nifti_volume(tmp_path / "o.nii", n_slices=3, size=16, affine=rot))
    assert any("oblique" in w and "10.0 deg" in w for w in oblique.warnings)
    path = tmp_path / "plain.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), None)
    nib.save(img, path)
    assert any("orientation unknown" in w for w in read_nifti(path).warnings)


def test_nifti_zero_zooms_and_degenerate_affine(tmp_path):
    path = write_nifti_volume(tmp_path / "z.nii", n_slices=3, size=16)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 76 + 4 * 3, 0.0)  # pixdim[3]: the slice thickness
    path.write_bytes(bytes(raw))
    image = read_nifti(path)  # nibabel replaces the 0 by 1; the user is told
    assert image.scale == pytest.approx((1.0, 1.0, 1.0))
    assert any("fixed by nibabel" in w and "pixdim" in w for w in image.warnings)
    flat = nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), None)
    flat.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    nib.save(flat, tmp_path / "flat.nii")
    with pytest.raises(ReaderError, match="degenerate affine"):
        read_nifti(tmp_path / "flat.nii")


def test_nifti_bad_header_and_truncation(tmp_path):
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\x00" * 400)
    with pytest.raises(ReaderError, match="not a readable NIfTI") as info:
        read_nifti(bad)
    assert str(bad) in str(info.value)
    good = write_nifti_volume(tmp_path / "cut.nii", n_slices=4, size=16)
    good.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ReaderError, match="truncated NIfTI"):
        read_nifti(good)


def test_truncated_nifti_gz_fails_when_decoded(tmp_path):
    path = write_nifti_volume(tmp_path / "cut.nii.gz", n_slices=8, size=32)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    image = read_nifti(path)  # the header decompresses fine
    with pytest.raises(ReaderError, match="cannot read NIfTI") as info:
        image.levels[0][-1].compute()
    assert str(path) in str(info.value)


def test_is_nifti(tmp_path):
    nii = write_nifti_volume(tmp_path / "a.nii", n_slices=2, size=16)
    gz = write_nifti_volume(tmp_path / "a.nii.gz", n_slices=2, size=16)
    assert is_nifti(nii) and is_nifti(gz) and is_nifti(str(gz))
    fake = tmp_path / "fake.nii"
    fake.write_bytes(b"x" * 10)
    broken_gz = tmp_path / "b.nii.gz"
    broken_gz.write_bytes(b"not gzip")
    assert not is_nifti(fake)
    assert not is_nifti(broken_gz)
    assert not is_nifti(tmp_path / "missing.nii")
    assert not is_nifti(tmp_path)
    assert not is_nifti(tmp_path / "a.tif")


# --- Kaggle LGG --------------------------------------------------------------------------


def test_lgg_slices_sorted_by_integer(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=12, size=32)
    assert sorted(os.listdir(folder))[:3] == [f"{PID}_1.tif", f"{PID}_10.tif", f"{PID}_10_mask.tif"]
    image, labels = read_lgg_folder(folder)
    assert image.metadata["slice_numbers"] == list(range(1, 13))
    assert image.axes == "zyxc" and image.shape == (12, 32, 32, 3)
    assert image.levels[0].chunks[0] == (1,) * 12
    pixels = image.levels[0].compute()
    masks = labels.levels[0].compute()
    for n in range(1, 13):
        np.testing.assert_array_equal(pixels[n - 1], tifffile.imread(folder / f"{PID}_{n}.tif"))
        expected = tifffile.imread(folder / f"{PID}_{n}_mask.tif") // 255
        np.testing.assert_array_equal(masks[n - 1], expected)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}


def test_lgg_records_and_display(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=3, size=16)
    image, labels = read_lgg_folder(folder)
    assert image.display == {
        "channel_axis": 3,
        "name": [f"{PID} pre-contrast", f"{PID} FLAIR", f"{PID} post-contrast"],
        "visible": [False, True, False],
        "colormap": "gray",
    }
    assert image.scale == (1.0, 1.0, 1.0) and image.unit == "mm"
    assert any("voxel size unknown" in w for w in image.warnings)
    assert image.metadata["voxel_size"] == "unknown"
    assert (labels.kind, labels.axes, labels.name) == ("labels", "zyx", f"{PID} FLAIR abnormality")
    assert labels.warnings == []
    kinds = [kind for _, _, kind in to_layer_data([image, labels])]
    assert kinds == ["image", "labels"]


def test_lgg_missing_mask_warns_and_is_background(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=4, size=16)
    (folder / f"{PID}_3_mask.tif").unlink()
    image, labels = read_lgg_folder(folder)
    assert image.shape[0] == 4
    assert labels.metadata["missing_masks"] == [f"{PID}_3.tif"]
    assert len(labels.warnings) == 1 and f"{PID}_3.tif" in labels.warnings[0]
    assert not labels.levels[0][2].compute().any()


def test_lgg_gapped_slice_numbers_sit_at_their_numbers(tmp_path):
    """Slices 1, 2, 5, 6 (3-4 dropped, as the Kaggle set drops empty odd slices): each slice
    is at plane n - 1, the gap is two zero planes listed as absent, and export skips them
    (tests/annotate/test_export_plan.py)."""
    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=6, size=16)
    for n in (3, 4):
        (folder / f"{PID}_{n}.tif").unlink()
        (folder / f"{PID}_{n}_mask.tif").unlink()
    image, labels = read_lgg_folder(folder)
    assert image.shape[0] == labels.shape[0] == 6
    assert image.metadata["slice_numbers"] == [1, 2, 3, 4, 5, 6]
    assert image.metadata["absent_slices"] == labels.metadata["absent_slices"] == [2, 3]
    assert image.metadata["files"][2:4] == [None, None]
    assert any("2 of 6 slice numbers have no file (3-4)" in w for w in image.warnings)
    volume = image.levels[0].compute()
    np.testing.assert_array_equal(volume[4], tifffile.imread(folder / f"{PID}_5.tif"))
    assert not volume[2:4].any() and not labels.levels[0][2:4].compute().any()
    np.testing.assert_array_equal(labels.levels[0][5].compute(),
                                  tifffile.imread(folder / f"{PID}_6_mask.tif") > 0)


def test_lgg_mask_shape_mismatch_names_the_mask(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=3, size=16)
    bad = folder / f"{PID}_2_mask.tif"
    tifffile.imwrite(bad, np.zeros((8, 8), np.uint8))
    with pytest.raises(ReaderError, match="mask shape") as info:
        read_lgg_folder(folder)
    assert info.value.path == str(bad)


def test_lgg_multi_patient_folder_and_single_slice(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for pid, n in (("TCGA_AA_0002_19990101", 2), ("TCGA_AA_0001_19990101", 3)):
        for f in write_lgg_patient(tmp_path / "src", patient_id=pid, n_slices=n, size=16).iterdir():
            shutil.copy(f, mixed / f.name)
    records = read_lgg_folder(mixed)
    assert [r.name for r in records] == [
        "TCGA_AA_0001_19990101",
        "TCGA_AA_0001_19990101 FLAIR abnormality",
        "TCGA_AA_0002_19990101",
        "TCGA_AA_0002_19990101 FLAIR abnormality",
    ]
    assert [r.shape[0] for r in records] == [3, 3, 2, 2]
    one = mixed / "TCGA_AA_0001_19990101_2.tif"
    image, labels = read_lgg_folder(one)
    assert image.metadata["slice_numbers"] == [2] and labels.shape == (1, 16, 16)
    np.testing.assert_array_equal(image.levels[0][0].compute(), tifffile.imread(one))
    same = read_lgg_folder(mixed / "TCGA_AA_0001_19990101_2_mask.tif")
    assert same[0].metadata["slice_numbers"] == [2]


def test_is_lgg_folder_and_slice(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=2, size=16)
    assert is_lgg_folder(folder) and is_lgg_folder(str(folder))
    assert is_lgg_slice(folder / f"{PID}_1.tif")
    assert is_lgg_slice(folder / f"{PID}_1_mask.tif")
    assert not is_lgg_folder(tmp_path)  # the patient folder is inside
    assert not is_lgg_folder(folder / f"{PID}_1.tif")
    assert not is_lgg_folder(tmp_path / "missing")
    assert not is_lgg_slice(folder)
    for mask in folder.glob("*_mask.tif"):
        mask.unlink()
    # a patient to segment has no masks: the Kaggle names are enough (issue 12, item 5)
    assert is_lgg_folder(folder)
    assert is_lgg_slice(folder / f"{PID}_1.tif")
    # without masks, names that are not Kaggle's are not claimed
    plain = tmp_path / "plain"
    plain.mkdir()
    for n in (1, 2):
        tifffile.imwrite(plain / f"scan_{n}.tif", np.zeros((16, 16, 3), np.uint8),
                         photometric="rgb")
    assert not is_lgg_folder(plain)
    assert not is_lgg_slice(plain / "scan_1.tif")
    # a Kaggle name on a file that is not an HxWx3 slice (a volume) is not a slice
    volume = tmp_path / "TCGA_XX_0001_20000101_1.tif"
    tifffile.imwrite(volume, np.zeros((4, 16, 16), np.uint16), photometric="minisblack")
    assert not is_lgg_slice(volume)


def test_lgg_empty_folder_is_a_reader_error(tmp_path):
    with pytest.raises(ReaderError, match="no Kaggle LGG slices"):
        read_lgg_folder(tmp_path)
    write_lgg_patient(tmp_path, patient_id=PID, n_slices=1, size=16)  # a kaggle_3m-like root
    with pytest.raises(ReaderError, match=f"1 patient folders inside \\(e.g. {PID}\\)"):
        read_lgg_folder(tmp_path)


def test_lgg_patient_without_masks_opens_as_one_image(tmp_path):
    from napari_neuroseg.io import detect_format, open_image

    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=12, size=16)
    for mask in folder.glob("*_mask.tif"):
        mask.unlink()
    assert detect_format(folder) == "lgg"
    (image,) = open_image(folder)  # no empty reference labels for a patient to segment
    assert image.modality == "MR" and image.axes == "zyxc" and image.shape == (12, 16, 16, 3)
    assert image.metadata["slice_numbers"] == list(range(1, 13))
    assert any("no mask files" in w for w in image.warnings)
    np.testing.assert_array_equal(image.levels[0][9].compute(),
                                  tifffile.imread(folder / f"{PID}_10.tif"))


def test_single_lgg_slice_without_mask_is_a_three_channel_mr_image(tmp_path):
    from napari_neuroseg.io import detect_format, open_image

    folder = write_lgg_patient(tmp_path, patient_id=PID, n_slices=3, size=16)
    for mask in folder.glob("*_mask.tif"):
        mask.unlink()
    one = folder / f"{PID}_2.tif"
    assert detect_format(one) == "lgg"  # not an RGB picture, not a 3-layer TIFF stack
    (image,) = open_image(one)
    assert image.modality == "MR" and image.shape == (1, 16, 16, 3)
    assert image.metadata["slice_numbers"] == [2]
    layers = to_layer_data([image])
    ((_data, kwargs, kind),) = layers
    assert kind == "image" and kwargs["channel_axis"] == 3
    assert kwargs["name"] == [f"{PID} pre-contrast", f"{PID} FLAIR", f"{PID} post-contrast"]
    assert kwargs["units"] == ("mm", "mm", "mm")


def test_folder_of_many_patients_is_refused_by_open_image_with_a_pointer(tmp_path):
    from napari_neuroseg.io import open_image

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for pid in ("TCGA_AA_0001_19990101", "TCGA_AA_0002_19990101"):
        for f in write_lgg_patient(tmp_path / "src", patient_id=pid, n_slices=2,
                                   size=16).iterdir():
            shutil.copy(f, mixed / f.name)
    with pytest.raises(ReaderError, match="2 patients") as info:
        open_image(mixed)
    message = str(info.value)
    assert str(mixed) in message and "one patient at a time" in message
    assert "TCGA_AA_0001_19990101_1.tif" in message
    assert len(read_lgg_folder(mixed)) == 4  # the library call still reads them all
    assert len(open_image(tmp_path / "src" / "TCGA_AA_0001_19990101")) == 2


@pytest.mark.realdata
def test_real_kaggle_patient_without_masks(shared_data, tmp_path):
    from napari_neuroseg.io import detect_format, open_image

    source = shared_data / "lgg_mri_kaggle3m" / "TCGA_CS_4941_19960909"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    slices = sorted(p for p in source.glob("*.tif") if not p.name.endswith("_mask.tif"))[:4]
    patient = tmp_path / source.name
    patient.mkdir()
    for path in slices:
        shutil.copy(path, patient / path.name)
    assert detect_format(patient) == "lgg"
    (image,) = open_image(patient)
    assert image.shape == (4, 256, 256, 3) and image.modality == "MR"
    np.testing.assert_array_equal(image.levels[0][0].compute(),
                                  tifffile.imread(patient / image.metadata["files"][0]))
    (one,) = open_image(patient / slices[0].name)
    assert one.shape == (1, 256, 256, 3)


@pytest.mark.realdata
def test_real_lgg_slices_folder_is_refused_by_open_image(shared_data):
    from napari_neuroseg.io import open_image

    folder = shared_data / "lgg_mri_slices"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    with pytest.raises(ReaderError, match="21 patients"):
        open_image(folder)


@pytest.mark.realdata
def test_real_lgg_folder(shared_data):
    folder = shared_data / "lgg_mri_slices"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    assert is_lgg_folder(folder)
    records = read_lgg_folder(folder)
    images, labels = records[0::2], records[1::2]
    assert len(images) == len(labels) == 21
    assert sum(image.shape[0] - len(image.metadata["absent_slices"]) for image in images) == 24
    by_name = {image.name: image for image in images}
    two = by_name["TCGA_HT_7684_19950816"]  # slices 6 and 10, at their numbers
    assert two.shape == (5, 256, 256, 3) and two.levels[0].dtype == np.uint8
    assert two.metadata["slice_numbers"] == [6, 7, 8, 9, 10]
    assert two.metadata["absent_slices"] == [1, 2, 3]
    non_empty = 0
    for mask in labels:
        values = mask.levels[0].compute()
        assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1}
        non_empty += sum(bool(s.any()) for s in values)
    assert non_empty == 6


def test_gzip_helper_sanity(tmp_path):
    """The .nii.gz the helpers write is a real gzip stream (other tools can read it)."""
    path = write_nifti_volume(tmp_path / "g.nii.gz", n_slices=2, size=16)
    with gzip.open(path, "rb") as f:
        assert f.read(348)[344:347] == b"n+1"
