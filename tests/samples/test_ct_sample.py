"""Tests for napari_neuroseg.samples.ct (synthetic head-CT DICOM series)."""

import math

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from napari_neuroseg.samples.ct import (
    SAMPLE_FOLDER,
    HeadPhantom,
    make_sample_ct,
    slice_geometry,
    write_ct_series,
)


def hu(ds):
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_series_is_valid_ct_dicom_in_hu(tmp_path):
    paths = write_ct_series(tmp_path, n_slices=5, size=64)
    assert [p.name for p in paths] == [f"CT1_{k:04d}.dcm" for k in range(1, 6)]
    ds = dcmread(paths[2])
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == "CT" and ds.SeriesNumber == 1 and ds.SeriesDescription == "Head 5mm"
    assert (ds.Rows, ds.Columns) == (64, 64)
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.7]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert ds.pixel_array.dtype == np.uint16 and ds.BitsStored == 12
    values = hu(ds)
    assert abs(np.median(values[:4, :4]) + 1000) < 5  # air
    assert 950 < np.percentile(values, 99) < 1050  # skull
    assert np.mean((values > 20) & (values < 48)) > 0.2  # brain
    assert np.mean((values > -8) & (values < 15)) > 0.005  # ventricles
    assert list(tmp_path.glob(".*")) == []  # no temporary files left


def test_phantom_tissues():
    phantom = HeadPhantom((70.0, 90.0, 80.0))
    ax, ay, az = phantom.semi_axes
    points = np.array([
        [0, 0, 0.9 * az],  # grey/white: near the top, inside the brain
        [0.95 * ax * 0.97, 0, 0],  # skull (rho between 0.88 and 0.96)
        [0.98 * ax, 0, 0],  # scalp
        [0.12 * ax, 0, 0.05 * az],  # ventricle
        phantom.lesion_centre_mm,
        [2 * ax, 0, 0],  # air
        [0.5 * ax, 0.4 * ay, 0],  # white matter
    ])
    values = phantom.hu(points)
    assert values.tolist() == [1000.0, 1000.0, 40.0, 5.0, 65.0, -1000.0, 30.0]
    assert HeadPhantom((70.0, 90.0, 80.0), lesion=False).hu(points)[4] == 30.0


def test_tilted_geometry_matches_a_ge_gantry(tmp_path):
    tilt = 15.0
    paths = write_ct_series(tmp_path, n_slices=4, size=32, spacing=(3.0, 0.5, 0.5),
                            tilt_deg=tilt)
    t = math.radians(tilt)
    datasets = [dcmread(p) for p in paths]
    iop = [float(v) for v in datasets[0].ImageOrientationPatient]
    assert iop == pytest.approx([1, 0, 0, 0, math.cos(t), -math.sin(t)], abs=1e-6)
    ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    assert np.ptp(ipp[:, :2], axis=0) == pytest.approx([0, 0], abs=1e-6)  # along z only
    assert np.diff(ipp[:, 2]) == pytest.approx(3.0 / math.cos(t), abs=1e-5)
    normal = np.array([0, math.sin(t), math.cos(t)])
    assert np.diff(ipp @ normal) == pytest.approx(3.0, abs=1e-5)
    assert float(datasets[0].GantryDetectorTilt) == tilt


def test_uneven_geometry():
    positions, _ = slice_geometry(5, (2.0, 1.0, 1.0), 8, 0.0, uneven=True)
    assert np.diff(positions[:, 2]).tolist() == [2.0, 2.0, 3.0, 3.0]
    assert positions[:, 2].mean() == pytest.approx(0.0)


def test_shuffles_names_and_instance_numbers(tmp_path):
    paths = write_ct_series(tmp_path, n_slices=10, size=16, shuffle_names=True,
                            shuffle_instance_numbers=True, seed=4)
    z = [float(dcmread(p).ImagePositionPatient[2]) for p in paths]
    assert z == sorted(z)  # returned in position order
    names = [p.name for p in paths]
    instances = [int(dcmread(p).InstanceNumber) for p in paths]
    assert names != sorted(names) and sorted(names) == [f"CT1_{k:04d}.dcm" for k in range(1, 11)]
    assert instances != sorted(instances) and sorted(instances) == list(range(1, 11))


def test_same_seed_same_pixels_whatever_the_shuffle(tmp_path):
    plain = write_ct_series(tmp_path / "a", n_slices=4, size=16, seed=2)
    shuffled = write_ct_series(tmp_path / "b", n_slices=4, size=16, seed=2, shuffle_names=True)
    for a, b in zip(plain, shuffled, strict=True):
        da, db = dcmread(a), dcmread(b)
        assert np.array_equal(da.pixel_array, db.pixel_array)
        assert da.SOPInstanceUID == db.SOPInstanceUID
    other = write_ct_series(tmp_path / "c", n_slices=4, size=16, seed=3)
    assert not np.array_equal(dcmread(other[0]).pixel_array, dcmread(plain[0]).pixel_array)


@pytest.mark.parametrize("slope, intercept, signed", [(0.5, -1024, False), (1, 0, True)])
def test_rescale_storage(tmp_path, slope, intercept, signed):
    (path,) = write_ct_series(tmp_path, n_slices=1, size=32, slope=slope, intercept=intercept)
    ds = dcmread(path)
    assert ds.PixelRepresentation == int(signed)
    assert abs(np.median(hu(ds)[:3, :3]) + 1000) < 5


@pytest.mark.parametrize("how", ["header", "truncate"])
def test_corrupt_middle_slice(tmp_path, how):
    clean = write_ct_series(tmp_path / "clean", n_slices=6, size=16)
    paths = write_ct_series(tmp_path / "bad", n_slices=6, size=16, corrupt=how)
    sizes = [p.stat().st_size for p in paths]
    assert [p.read_bytes() for i, p in enumerate(paths) if i != 3] == [
        p.read_bytes() for i, p in enumerate(clean) if i != 3]
    assert paths[3].read_bytes() != clean[3].read_bytes()
    if how == "truncate":
        assert sizes[3] < sizes[0]
    else:
        assert paths[3].read_bytes()[128:132] == b"DICM"
        assert sizes[3] == clean[3].stat().st_size


def test_two_series(tmp_path):
    paths = write_ct_series(tmp_path, n_slices=6, size=16, series=2)
    datasets = [dcmread(p) for p in paths]
    assert [d.SeriesNumber for d in datasets] == [1] * 6 + [2] * 3
    assert len({d.SeriesInstanceUID for d in datasets}) == 2
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert {d.SeriesDescription for d in datasets} == {"Head 5mm", "Head 10mm"}


@pytest.mark.parametrize("kwargs", [{"series": 3}, {"n_slices": 0}, {"slope": 0},
                                    {"corrupt": "zap"}, {"tilt_deg": 75}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_ct_series(tmp_path, size=16, n_slices=kwargs.pop("n_slices", 4), **kwargs)
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def test_sample_is_written_once(tmp_path):
    folder = make_sample_ct(tmp_path)
    assert folder == tmp_path / SAMPLE_FOLDER
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 24
    assert (dcmread(files[0]).Rows, dcmread(files[0]).Columns) == (256, 256)
    stamp = files[0].stat().st_mtime_ns
    assert make_sample_ct(tmp_path) == folder
    assert files[0].stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [SAMPLE_FOLDER]  # no temporary folder left
    files[0].unlink()  # a half-made sample is rebuilt
    assert len(list(make_sample_ct(tmp_path).glob("*.dcm"))) == 24
    (folder / "mine.txt").write_text("user file")
    files[1].unlink()
    with pytest.raises(FileExistsError, match="other files"):
        make_sample_ct(tmp_path)
