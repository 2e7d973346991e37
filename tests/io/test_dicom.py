"""Tests for napari_neuroseg.io.dicom: series reading, ordering, tilt, resampling, bad input."""

import json
import math
import shutil
import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_neuroseg.io import _dicom_headers, _dicom_volume
from napari_neuroseg.io._describe import describe
from napari_neuroseg.io._types import ReaderError
from napari_neuroseg.io.dicom import (
    DicomWarning,
    is_dicom_file,
    is_dicom_folder,
    read_dicom,
    scan_dicom,
)
from napari_neuroseg.io.layers import to_layer_data
from napari_neuroseg.samples.ct import HeadPhantom, write_ct_series


def read_quietly(source, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DicomWarning)
        return read_dicom(source, **kwargs)


def direct_volume(paths):
    """The HU volume read with pydicom alone, sorted by IPP z (the phantom is axial)."""
    datasets = sorted((dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets]
    )


@pytest.fixture
def ct_folder(tmp_path):
    folder = tmp_path / "ct"
    write_ct_series(folder, n_slices=8, size=32)
    return folder


# --- order, values, series -------------------------------------------------------------------


def test_shuffled_series_is_ordered_by_position_and_corrupt_file_listed(tmp_path):
    paths = write_ct_series(
        tmp_path,
        n_slices=12,
        size=32,
        shuffle_names=True,
        shuffle_instance_numbers=True,
        corrupt="header",
        seed=3,
    )
    bad = paths[6]
    names = [p.name for p in paths]
    instances = [int(dcmread(p).InstanceNumber) for p in paths if p != bad]
    assert names != sorted(names) and instances != sorted(instances)  # really shuffled
    with pytest.warns(DicomWarning) as record:
        (image,) = read_dicom(tmp_path)
    messages = [str(w.message) for w in record]
    assert any(f"skipped 1 file(s): {bad.name}: unreadable" in m for m in messages)
    assert any("uneven slice spacing" in m for m in messages)  # the gap it leaves
    good = [p for p in paths if p != bad]
    assert image.shape == (11, 32, 32)
    assert image.metadata["files"] == [str(p) for p in good]
    assert np.array_equal(image.levels[0].compute(), direct_volume(good))
    assert image.metadata["skipped_files"][0].startswith(bad.name)
    positions = image.metadata["slice_positions_mm"]
    assert positions == sorted(positions)
    assert image.metadata["slice_spacings_mm"][5] == pytest.approx(10.0)  # the gap it leaves


def test_truncated_slice_is_skipped_with_warning(tmp_path):
    paths = write_ct_series(tmp_path, n_slices=6, size=32, corrupt="truncate")
    with pytest.warns(DicomWarning) as record:
        (image,) = read_dicom(tmp_path)
    messages = [str(w.message) for w in record]
    assert any(f"{paths[3].name}: pixel data is truncated" in m for m in messages)
    assert image.shape == (5, 32, 32)


@pytest.mark.parametrize(
    "slope, intercept, dtype",
    [(1, -1024, np.int16), (0.5, -1024, np.float32), (1, 0, np.int16), (2, -1024, np.int16)],
)
def test_hu_values_apply_slope_and_intercept(tmp_path, slope, intercept, dtype):
    paths = write_ct_series(tmp_path, n_slices=4, size=48, slope=slope, intercept=intercept)
    (image,) = read_quietly(tmp_path)
    volume = image.levels[0].compute()
    assert volume.dtype == dtype
    assert np.allclose(volume, direct_volume(paths))
    assert abs(np.median(volume[:, :3, :3]) + 1000) <= 2 * slope  # air
    assert 900 < np.percentile(volume, 99.5) < 1100  # skull
    assert image.metadata["rescale"] == {"slope": slope, "intercept": intercept}


def test_ct_layer_metadata_scale_and_display(ct_folder):
    (image,) = read_quietly(ct_folder)
    first = dcmread(sorted(ct_folder.iterdir())[0])
    assert image.name == "Head 5mm (#1)"
    assert image.axes == "zyx" and image.unit == "mm" and image.modality == "CT"
    assert image.scale == pytest.approx((5.0, 0.7, 0.7))
    ipp = [float(v) for v in first.ImagePositionPatient]
    assert image.translate == pytest.approx((ipp[2], ipp[1], ipp[0]))
    assert image.display == {"contrast_limits": (0.0, 80.0), "colormap": "gray"}
    meta = image.metadata
    assert meta["window_presets"] == {
        "brain": (40.0, 80.0),
        "subdural": (75.0, 215.0),
        "bone": (600.0, 2800.0),
    }
    assert (meta["window_center"], meta["window_width"]) == (40.0, 80.0)
    assert meta["uniform_spacing"] and meta["tilt_deg"] == pytest.approx(0, abs=1e-6)
    assert meta["orientation_label"] == "axial" and meta["n_slices"] == 8
    assert meta["transfer_syntax"] == "Explicit VR Little Endian"
    assert meta["patient_id"] == "NEUROSEG-PHANTOM" and meta["study_date"] == "20240101"
    assert image.levels[0].chunks == ((1,) * 8, (32,), (32,))
    assert image.warnings == []
    json.dumps(meta)  # JSON-friendly
    ((data, kwargs, kind),) = to_layer_data([image])
    assert kind == "image" and data is image.levels[0] and kwargs["contrast_limits"] == (0, 80)


def test_two_series_in_one_folder(tmp_path):
    write_ct_series(tmp_path, n_slices=6, size=32, series=2)
    images = read_quietly(tmp_path)
    assert [i.name for i in images] == ["Head 5mm (#1)", "Head 10mm (#2)"]
    assert [i.shape[0] for i in images] == [6, 3]
    assert [i.scale[0] for i in images] == pytest.approx([5.0, 10.0])
    found = scan_dicom(tmp_path)
    assert [s.name for s in found] == ["Head 5mm (#1)", "Head 10mm (#2)"]
    assert found[1].shape == (3, 32, 32) and found[1].spacing == pytest.approx((10, 0.7, 0.7))
    by_uid = read_quietly(tmp_path, series=found[1].uid)
    by_number = read_quietly(tmp_path, series=2)
    by_index = read_quietly(tmp_path, series=0)
    assert [i.name for i in by_uid + by_number + by_index] == [
        "Head 10mm (#2)",
        "Head 10mm (#2)",
        "Head 5mm (#1)",
    ]
    with pytest.raises(ReaderError, match=r"no series matches 9.*Head 5mm"):
        read_dicom(tmp_path, series=9)


def test_dicomdir_gives_the_same_volume(tmp_path):
    paths = write_ct_series(tmp_path / "src", n_slices=5, size=32, shuffle_names=True)
    fileset = FileSet()
    for path in paths:
        fileset.add(path)
    fileset.write(tmp_path / "disc")
    (from_dir,) = read_quietly(tmp_path / "src")
    (from_dicomdir,) = read_quietly(tmp_path / "disc" / "DICOMDIR")
    (from_disc,) = read_quietly(tmp_path / "disc")
    expected = from_dir.levels[0].compute()
    assert np.array_equal(from_dicomdir.levels[0].compute(), expected)
    assert np.array_equal(from_disc.levels[0].compute(), expected)
    assert from_dicomdir.translate == pytest.approx(from_dir.translate)


def test_list_of_files(ct_folder):
    files = sorted(ct_folder.iterdir(), reverse=True)[:5]
    (image,) = read_quietly(files)
    assert image.shape == (5, 32, 32)
    assert np.array_equal(image.levels[0].compute(), direct_volume(files))


# --- tilt and spacing ------------------------------------------------------------------------


def lesion_centroids(volume):
    """Row/col centroid of the lesion (55-80 HU, away from the skull) per slice."""
    from scipy import ndimage

    near_skull = ndimage.maximum_filter(volume, size=(1, 9, 9)) > 200
    out = {}
    for k, plane in enumerate(volume):
        mask = (plane > 55) & (plane < 80) & ~near_skull[k]
        if mask.sum() > 40:
            rows, cols = np.nonzero(mask)
            out[k] = (rows.mean(), cols.mean())
    return out


def test_tilt_detected_and_resampling_corrects_the_shear(tmp_path):
    tilt, gap, pixel = 20.0, 2.0, 0.7
    write_ct_series(
        tmp_path, n_slices=40, size=128, spacing=(gap, pixel, pixel), tilt_deg=tilt, seed=1
    )
    with pytest.warns(DicomWarning, match="gantry tilt of 20.0 deg.*resample=True"):
        (stored,) = read_dicom(tmp_path)
    assert stored.metadata["tilt_deg"] == pytest.approx(tilt, abs=0.01)
    assert stored.metadata["gantry_detector_tilt_deg"] == pytest.approx(tilt)
    assert stored.scale[0] == pytest.approx(gap)
    raw = lesion_centroids(stored.levels[0].compute())
    rows = [raw[k][0] for k in sorted(raw)]
    drift = gap * math.tan(math.radians(tilt)) / pixel  # px per slice in the sheared stack
    assert np.diff(rows) == pytest.approx(drift, abs=0.3)

    with pytest.warns(DicomWarning, match="corrected by resampling"):
        (fixed,) = read_dicom(tmp_path, resample=True)
    assert fixed.metadata["resampled"]["tilt_corrected"]
    assert fixed.scale == pytest.approx((gap, pixel, pixel))
    extra = math.ceil(39 * gap * math.tan(math.radians(tilt)) / pixel - 1e-6)
    assert fixed.shape == (40, 128 + extra, 128)
    centroids = lesion_centroids(fixed.levels[0].compute())
    assert len(centroids) >= 4
    rows = np.array([c[0] for c in centroids.values()])
    cols = np.array([c[1] for c in centroids.values()])
    assert np.ptp(rows) < 1.0 and np.ptp(cols) < 1.0
    # and the lesion sits where the phantom puts it, in the slice frame (n, c, r)
    phantom = HeadPhantom.fitting(128 * pixel, 39 * gap)
    t = math.radians(tilt)
    centre = np.array(phantom.lesion_centre_mm)
    normal, col = np.array([0, math.sin(t), math.cos(t)]), np.array([0, math.cos(t), -math.sin(t)])
    expected_row = (centre @ col - fixed.translate[1]) / pixel
    expected_col = (centre[0] - fixed.translate[2]) / pixel
    assert rows.mean() == pytest.approx(expected_row, abs=0.7)
    assert cols.mean() == pytest.approx(expected_col, abs=0.7)
    expected_slice = (centre @ normal - fixed.translate[0]) / gap
    assert np.mean(list(centroids)) == pytest.approx(expected_slice, abs=1.0)


def test_uneven_spacing_detected_and_resampled(tmp_path):
    write_ct_series(tmp_path, n_slices=9, size=32, uneven=True)
    with pytest.warns(
        DicomWarning,
        match=r"uneven slice spacing 5.00 mm \(slices 1-5\), "
        r"7.50 mm \(slices 5-9\)",
    ):
        (stored,) = read_dicom(tmp_path)
    meta = stored.metadata
    assert not meta["uniform_spacing"]
    assert meta["slice_spacings_mm"] == pytest.approx([5.0] * 4 + [7.5] * 4)
    assert stored.scale[0] == pytest.approx(6.25)  # the mean
    (uniform,) = read_quietly(tmp_path, resample=True)
    assert uniform.scale[0] == pytest.approx(6.25)  # median of 4 x 5.0 and 4 x 7.5
    assert uniform.shape[0] == math.floor(50 / 6.25) + 1
    (fine,) = read_quietly(tmp_path, resample=True, spacing=2.5)
    assert fine.shape == (21, 32, 32)
    source, resampled = stored.levels[0].compute(), fine.levels[0].compute()
    assert np.array_equal(resampled[::2][:5], source[:5])  # 0, 5, ..., 20 mm coincide
    expected = (2.0 * source[4] + source[5]) / 3  # 22.5 mm: a third of the way 20 -> 27.5
    assert np.abs(resampled[9] - expected).max() <= 0.5 + 1e-3
    with pytest.raises(ValueError, match="resample=True"):
        read_dicom(tmp_path, spacing=2.0)


# --- laziness --------------------------------------------------------------------------------


def test_opening_reads_no_pixels(ct_folder, monkeypatch):
    decoded = []
    real_pixel_array = _dicom_volume.pixel_array

    def counting(path, **kwargs):
        decoded.append(path)
        return real_pixel_array(path, **kwargs)

    real_dcmread = _dicom_headers.dcmread

    def headers_only(fp, **kwargs):
        assert kwargs.get("stop_before_pixels") is True
        return real_dcmread(fp, **kwargs)

    monkeypatch.setattr(_dicom_volume, "pixel_array", counting)
    monkeypatch.setattr(_dicom_headers, "dcmread", headers_only)
    (image,) = read_quietly(ct_folder)
    (resampled,) = read_quietly(ct_folder, resample=True, spacing=2.5)
    assert decoded == []
    image.levels[0][3].compute()
    assert len(decoded) == 1
    resampled.levels[0][3].compute()  # 7.5 mm: between slices 1 and 2
    assert len(decoded) == 3


def test_slice_that_fails_later_is_filled_and_named(ct_folder):
    (image,) = read_quietly(ct_folder)
    victim = sorted(ct_folder.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:1000])  # damaged after opening
    with pytest.warns(DicomWarning, match=f"{victim.name}.*filled with -1024"):
        volume = image.levels[0].compute()
    assert np.all(volume[2] == -1024)
    assert volume[1].max() > 500


# --- bad input -------------------------------------------------------------------------------


def header_only_copy(source, target):
    ds = dcmread(source)
    del ds.PixelData
    ds.save_as(target, enforce_file_format=True)
    return target


def test_file_without_pixel_data_is_an_error_alone(tmp_path):
    sr = shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "report.dcm")
    with pytest.raises(ReaderError, match=r"report\.dcm: has no pixel data \(Comprehensive SR"):
        read_dicom(sr)
    header = header_only_copy(get_testdata_file("CT_small.dcm"), tmp_path / "hdr.dcm")
    with pytest.raises(ReaderError, match=r"hdr\.dcm: no pixel data although it is a CT Image"):
        read_dicom(header)


def new_dataset(sop_class_uid):
    """An empty DICOM dataset of ``sop_class_uid`` with a new instance UID, ready to save
    (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, meta.MediaStorageSOPInstanceUID
    return ds


def presentation_state(path):
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.11.1")
    ds.Modality, ds.SeriesInstanceUID = "PR", generate_uid()
    ds.save_as(path, enforce_file_format=True)


def test_non_images_in_a_folder_are_ignored(ct_folder, tmp_path):
    shutil.copy(get_testdata_file("test-SR.dcm"), ct_folder / "sr.dcm")
    presentation_state(ct_folder / "pr.dcm")
    (ct_folder / "notes.txt").write_text("not DICOM")
    fileset = FileSet()
    fileset.add(get_testdata_file("CT_small.dcm"))
    fileset.write(tmp_path / "disc")
    shutil.copy(tmp_path / "disc" / "DICOMDIR", ct_folder / "DICOMDIR")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomWarning)
        (image,) = read_dicom(ct_folder)
    assert image.shape == (8, 32, 32) and image.metadata["skipped_files"] == []
    # an image object without its pixels is left out too, but the user is told
    header_only_copy(sorted(ct_folder.glob("CT1_*"))[0], ct_folder / "lost.dcm")
    with pytest.warns(DicomWarning, match="lost.dcm: no pixel data"):
        (image,) = read_dicom(ct_folder)
    assert image.shape == (8, 32, 32)


def test_mixed_matrix_sizes_is_an_error(ct_folder):
    odd = sorted(ct_folder.iterdir())[5]
    ds = dcmread(odd)
    smaller = ds.pixel_array[::2, ::2].copy()
    ds.Rows = ds.Columns = 16
    ds.PixelData = smaller.tobytes()
    ds.save_as(odd, enforce_file_format=True)
    with pytest.raises(
        ReaderError,
        match=f"{odd.name}: series 'Head 5mm \\(#1\\)' mixes matrix sizes: this file is 16x16",
    ):
        read_dicom(ct_folder)


def test_duplicates_and_odd_orientations_are_left_out(ct_folder):
    files = sorted(ct_folder.iterdir())
    twin = dcmread(files[1])
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    twin.EchoNumbers = 2
    twin.save_as(ct_folder / "zz_echo2.dcm", enforce_file_format=True)
    scout = dcmread(files[4])
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    scout.save_as(files[4], enforce_file_format=True)
    with pytest.warns(DicomWarning) as record:
        (image,) = read_dicom(ct_folder)
    messages = " | ".join(str(w.message) for w in record)
    assert f"{files[4].name}: orientation differs" in messages
    assert "1 image(s) share a position" in messages and "zz_echo2.dcm" in messages
    assert image.shape == (7, 32, 32)
    assert str(ct_folder / "zz_echo2.dcm") not in image.metadata["files"]


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "sr.dcm")
    with pytest.raises(
        ReaderError, match=f"{tmp_path}: no readable DICOM images.*1 without pixel data: sr.dcm"
    ):
        read_dicom(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReaderError, match="empty: no readable DICOM images"):
        scan_dicom(empty)
    with pytest.raises(ReaderError, match="does not exist"):
        read_dicom(tmp_path / "missing")


def test_is_dicom_file_and_folder(ct_folder, tmp_path):
    dcm = sorted(ct_folder.iterdir())[0]
    text = tmp_path / "a.txt"
    text.write_text("x" * 200)
    (tmp_path / "DICOMDIR").write_bytes(b"")
    assert is_dicom_file(dcm) and is_dicom_file(str(tmp_path / "DICOMDIR"))
    assert not any(is_dicom_file(p) for p in (text, tmp_path, tmp_path / "nope.dcm", None, 3))
    assert is_dicom_folder(ct_folder)
    assert is_dicom_folder(tmp_path)  # holds a DICOMDIR
    nested = tmp_path / "export"
    (nested / "series1").mkdir(parents=True)
    shutil.copy(dcm, nested / "series1" / "IM0001")
    assert is_dicom_folder(nested)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "b.txt").write_text("y")
    assert not any(is_dicom_folder(p) for p in (plain, dcm, tmp_path / "nope", None))


# --- multi-frame and MR ----------------------------------------------------------------------


def enhanced_ct(path, positions, frames, functional_groups=True):
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.2.1")  # Enhanced CT Image Storage
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = generate_uid(), "CT", 7
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = (
        len(frames),
        1,
        "MONOCHROME2",
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if functional_groups:
        orient, measures, rescale = Dataset(), Dataset(), Dataset()
        orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        measures.PixelSpacing, measures.SliceThickness = [0.5, 0.25], 2
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
        shared = Dataset()
        shared.PlaneOrientationSequence = Sequence([orient])
        shared.PixelMeasuresSequence = Sequence([measures])
        shared.PixelValueTransformationSequence = Sequence([rescale])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for position in positions:
            plane, groups = Dataset(), Dataset()
            plane.ImagePositionPatient = list(position)
            groups.PlanePositionSequence = Sequence([plane])
            per_frame.append(groups)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_multiframe_frames_sorted_by_position(tmp_path):
    frames = np.stack([np.full((6, 8), 1024 + 10 * k) for k in range(5)])
    order = [3, 0, 4, 1, 2]
    path = enhanced_ct(tmp_path / "mf.dcm", [(0, 0, 2.0 * k) for k in order], frames[order])
    (image,) = read_quietly(path)
    assert image.shape == (5, 6, 8) and image.scale == pytest.approx((2.0, 0.5, 0.25))
    assert image.levels[0].compute()[:, 0, 0].tolist() == [0, 10, 20, 30, 40]
    assert image.metadata["frames"] == [1, 3, 4, 0, 2]


def test_multiframe_without_positions_is_not_supported(tmp_path):
    path = enhanced_ct(tmp_path / "mf.dcm", None, np.zeros((3, 4, 4)), functional_groups=False)
    pattern = r"multi-frame file \(3 frames\) without per-frame positions.*only enhanced"
    with pytest.raises(ReaderError, match=pattern):
        read_dicom(path)


def test_single_mr_file():
    (image,) = read_quietly(get_testdata_file("MR_small.dcm"))
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    assert image.modality == "MR" and image.shape == (1, 64, 64)
    assert np.array_equal(image.levels[0][0].compute(), ds.pixel_array)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert image.display["contrast_limits"] == (centre - width / 2, centre + width / 2)
    assert "window_presets" not in image.metadata


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_mr_reads_like_the_uncompressed_file(name):
    """JPEG 2000 and JPEG-LS lossless series decode with the ``dicom`` extra (pylibjpeg)."""
    pytest.importorskip("pylibjpeg")
    (image,) = read_quietly(get_testdata_file(name))
    reference = dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    assert np.array_equal(image.levels[0][0].compute(), reference)


def test_jpeg_lossless_process_14_decodes_with_the_dicom_extra():
    """pydicom alone cannot decode JPEG Lossless (1.2.840.10008.1.2.4.70); pylibjpeg can."""
    pytest.importorskip("pylibjpeg")
    from pydicom.pixels import pixel_array

    path = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")
    assert dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        "1.2.840.10008.1.2.4.70")
    decoded = pixel_array(path)
    assert np.array_equal(decoded, pixel_array(get_testdata_file("SC_rgb_rle.dcm")))


def write_mr_series(folder, volume, windows, description=""):
    """An axial MR series, one file per slice of ``volume`` (uint16), with the given
    (centre, width) window per slice (None: no window in that header)."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for index, (plane, window) in enumerate(zip(volume, windows, strict=True)):
        ds = new_dataset("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
        ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = uid, "MR", 4
        if description:
            ds.SeriesDescription = description
        ds.ImagePositionPatient = [0, 0, 2.0 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = plane.astype(np.uint16).tobytes()
        ds.save_as(folder / f"mr{index:03d}.dcm", enforce_file_format=True)
    return folder


def mr_volume(n_slices=9, size=16, seed=0):
    """Values up to about 1,000, the upper slices brighter than the first."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.1, 1.0, n_slices)[:, None, None]
    return (rng.uniform(0, 1000, (n_slices, size, size)) * ramp).astype(np.uint16)


def test_mr_window_is_the_median_over_the_headers_not_the_first(tmp_path):
    volume = mr_volume()
    windows = [(43, 121)] + [(500, 1000)] * 6 + [(480, 960), (520, 1040)]
    (image,) = read_quietly(write_mr_series(tmp_path / "mr", volume, windows))
    assert image.display["contrast_limits"] == (0.0, 1000.0)  # not (-17.5, 103.5)
    meta = image.metadata
    assert (meta["window_center"], meta["window_width"]) == (500.0, 1000.0)
    assert meta["display_window"].startswith("median window 500/1000 of 9")


def test_mr_without_header_windows_uses_percentiles_of_a_few_slices(tmp_path, monkeypatch):
    volume = mr_volume(n_slices=30)
    folder = write_mr_series(tmp_path / "mr", volume, [None] * 30)
    decoded = []
    real_pixel_array = _dicom_volume.pixel_array
    monkeypatch.setattr(_dicom_volume, "pixel_array",
                        lambda path, **kw: decoded.append(path) or real_pixel_array(path, **kw))
    (image,) = read_quietly(folder)
    assert len(decoded) == _dicom_volume.WINDOW_SAMPLE_SLICES  # a few slices, not all 30
    picked = sorted(int(p.stem[2:]) for p in decoded)
    low, high = np.percentile(volume[picked], (0.5, 99.5))
    assert image.display["contrast_limits"] == pytest.approx((low, high))
    assert high > 700
    assert image.metadata["window_center"] is None
    assert "percentiles of 5 slice(s) (no header window)" in image.metadata["display_window"]


def test_mr_headers_that_disagree_badly_fall_back_to_percentiles(tmp_path):
    volume = mr_volume(n_slices=8)
    windows = [(40, 80)] * 4 + [(3000, 200)] * 4  # the middle half spans 2,960 > the width
    (image,) = read_quietly(write_mr_series(tmp_path / "mr", volume, windows))
    low, high = image.display["contrast_limits"]
    assert low < 50 and 600 < high <= 1000
    assert "header windows disagree" in image.metadata["display_window"]


def test_series_without_description_has_no_blank_series_field(tmp_path):
    folder = write_mr_series(tmp_path / "mr", mr_volume(n_slices=2), [(500, 1000)] * 2)
    (image,) = read_quietly(folder)
    assert image.name == "MR series (#4)" and image.metadata["series_description"] is None
    assert "Series:" not in describe(image)
    (named,) = read_quietly(write_mr_series(tmp_path / "t1", mr_volume(n_slices=2),
                                            [None, None], description="T1 axial"))
    assert "Series: T1 axial" in describe(named)


def test_dicom_warnings_name_the_series_once(tmp_path):
    write_ct_series(tmp_path, n_slices=6, size=32, tilt_deg=15.0)
    with pytest.warns(DicomWarning) as record:
        (image,) = read_dicom(tmp_path)
    messages = [str(w.message) for w in record]
    assert messages and all(m.count(image.name) == 1 for m in messages)
    assert all(w.count(image.name) <= 1 for w in image.warnings)


# --- real data -------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_ge_head_ct_tilt_and_spacing(shared_data):
    folder = shared_data / "ct_head_ge"
    with pytest.warns(DicomWarning) as record:
        (image,) = read_dicom(folder)
    messages = " | ".join(str(w.message) for w in record)
    assert "gantry tilt of 18.5 deg" in messages and "uneven slice spacing" in messages
    meta = image.metadata
    assert image.shape == (28, 512, 512) and image.modality == "CT"
    assert meta["tilt_deg"] == pytest.approx(18.5, abs=0.2)
    assert meta["gantry_detector_tilt_deg"] == pytest.approx(18.5)
    assert image.scale[1:] == pytest.approx((0.488, 0.488), abs=1e-3)
    gaps = np.array(meta["slice_spacings_mm"])  # along the normal: 4.22 / 7.38 mm along z
    assert not meta["uniform_spacing"]
    assert gaps[:13] == pytest.approx(4.0, abs=0.05) and gaps[14:] == pytest.approx(7.0, abs=0.05)
    assert image.levels[0].dtype == np.int16
    (fixed,) = read_quietly(folder, resample=True)
    assert fixed.scale[0] == pytest.approx(float(np.median(gaps)))
    assert fixed.metadata["resampled"]["n_slices"] == fixed.shape[0]
    extent = meta["slice_positions_mm"][-1] - meta["slice_positions_mm"][0]
    assert fixed.shape[0] == math.floor(extent / fixed.scale[0] + 1e-6) + 1
    assert fixed.shape[1] > 512 and fixed.shape[2] == 512
    middle = fixed.levels[0][fixed.shape[0] // 2].compute()
    assert middle.shape == fixed.shape[1:] and middle.max() > 500  # bone is there


@pytest.mark.realdata
def test_real_sagittal_mprage(shared_data):
    folder = shared_data / "mri_t1_dicom"
    (image,) = read_quietly(folder)
    meta = image.metadata
    assert image.shape == (176, 256, 256) and image.modality == "MR"
    assert image.scale == pytest.approx((1.0, 1.0, 1.0), abs=1e-3)
    assert meta["orientation_label"] == "sagittal" and meta["uniform_spacing"]
    assert np.all(np.diff(meta["slice_positions_mm"]) > 0.99)
    assert meta["tilt_deg"] < 0.1 and image.warnings == []
    assert image.levels[0].chunks[0] == (1,) * 176
    assert image.levels[0][88].compute().max() > 0


@pytest.mark.realdata
def test_real_mprage_display_window_is_not_saturated(shared_data):
    """The first (near-empty) slice's header says 43/121; the brain reaches several hundred."""
    folder = shared_data / "mri_t1_dicom"
    (image,) = read_quietly(folder)
    low, high = image.display["contrast_limits"]
    middle = image.levels[0][88].compute()
    assert low <= 0 and high >= np.percentile(middle, 99)
    assert np.mean(middle > high) < 0.01  # under 1 % of the middle slice saturates
    headers = [dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    centres = [float(h.WindowCenter) for h in headers]
    assert image.metadata["window_center"] == pytest.approx(np.median(centres))
    assert image.metadata["display_window"].startswith("median window")
