"""Label and probability writers: formats, dtypes, physical sizes, pyramids, atomicity."""

from __future__ import annotations

import os
from collections.abc import Sequence

import dask.array as da
import imagecodecs
import numpy as np
import pytest
import tifffile

from napari_neuroseg.io.mri import read_tiff_stack
from napari_neuroseg.io.writers import WriterError, write_labels, write_probabilities


def _labels(shape, dtype=np.uint16, classes=7):
    return (np.arange(np.prod(shape)) % classes).astype(dtype).reshape(shape)


def _png(path):
    return imagecodecs.png_decode(path.read_bytes())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.int64])
def test_labels_tiff_roundtrip_keeps_dtype_and_scale(tmp_path, dtype):
    data = _labels((5, 30, 40), dtype)
    path = tmp_path / "labels.tif"
    assert write_labels(path, data, scale=(2.0, 0.5, 0.25), unit="mm") == [str(path)]
    back = tifffile.imread(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, data)
    image = read_tiff_stack(path)
    assert image.scale == pytest.approx((2.0, 0.5, 0.25))
    assert image.warnings == []
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert not tif.pages[0].is_tiled  # small planes are stripped
        assert tif.shaped_metadata[0]["kind"] == "labels"


def test_single_slice_volume_reads_back(tmp_path):
    path = tmp_path / "one.tif"
    write_labels(path, _labels((1, 12, 10), np.uint8), scale=(2.0, 0.5, 0.5), unit="mm")
    image = read_tiff_stack(path)  # the declared Z axis of length 1 is kept
    assert image.axes == "zyx" and image.scale == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(image.levels[0].compute(), _labels((1, 12, 10), np.uint8))


def test_labels_from_dask_bool_and_metadata(tmp_path):
    data = da.from_array(_labels((64, 48), np.uint8, 2).astype(bool), chunks=16)
    path = tmp_path / "mask.tif"
    write_labels(path, data, scale=(5.0, 5.0), unit="um", metadata={"name": "nuclei", "n": 3})
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), data.compute().astype(np.uint8))
        assert tif.shaped_metadata[0]["metadata"] == {"name": "nuclei", "n": 3}
        assert tif.pages[0].resolution == pytest.approx((2000.0, 2000.0))  # px per cm
    assert read_tiff_stack(path).scale == pytest.approx((0.005, 0.005))


def test_large_plane_is_tiled_256(tmp_path):
    data = da.from_array(_labels((1100, 1300), np.uint8, 250), chunks=(300, 700))
    path = tmp_path / "big.tif"
    write_labels(path, data)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        np.testing.assert_array_equal(page.asarray(), data.compute())


def test_ome_physical_size_and_pyramid_from_one_level(tmp_path):
    data = _labels((1030, 700), np.uint8, 200)
    path = tmp_path / "labels.ome.tif"
    write_labels(path, data, scale=(0.5, 0.25), unit="um", pyramid=True, metadata={"name": "L"})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(1030, 700), (515, 350), (258, 175), (129, 88)]
        np.testing.assert_array_equal(levels[0].asarray(), data)
        np.testing.assert_array_equal(levels[1].asarray(), data[::2, ::2])
        np.testing.assert_array_equal(levels[3].asarray(), data[::8, ::8])
        assert 'PhysicalSizeX="0.25"' in tif.ome_metadata
        assert 'PhysicalSizeXUnit="µm"' in tif.ome_metadata
        assert 'Name="L"' in tif.ome_metadata
    assert read_tiff_stack(path).scale == pytest.approx((0.0005, 0.00025))


def test_ome_pyramid_from_given_levels(tmp_path):
    level0 = _labels((8, 600, 520), np.uint16)
    levels = [da.from_array(level0), da.from_array(level0[:, ::2, ::2] + 1)]
    path = tmp_path / "multi.ome.tiff"
    write_labels(path, levels, scale=(3.0, 1.0, 1.0), unit="mm", pyramid=True)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert len(series.levels) == 2 and series.axes == "ZYX"
        np.testing.assert_array_equal(series.levels[1].asarray(), level0[:, ::2, ::2] + 1)
    assert read_tiff_stack(path).scale == pytest.approx((3.0, 1.0, 1.0))


class _LevelSequence(Sequence):
    """Like napari's MultiScaleData: a Sequence of levels, not a list."""

    def __init__(self, levels):
        self._levels = levels

    def __getitem__(self, index):
        return self._levels[index]

    def __len__(self):
        return len(self._levels)


def test_any_sequence_of_levels_is_a_pyramid(tmp_path):
    base = _labels((600, 300), np.uint8)
    path = tmp_path / "seq.ome.tif"
    write_labels(path, _LevelSequence([base, base[::2, ::2]]))
    with tifffile.TiffFile(path) as tif:
        assert [lv.shape for lv in tif.series[0].levels] == [(600, 300), (300, 150)]
    nested = [[0, 1, 2], [3, 4, 5]]  # a nested list of numbers is one 2D image
    write_labels(tmp_path / "nested.tif", nested)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "nested.tif"), nested)


def test_ome_narrows_int64_labels_or_refuses(tmp_path):
    path = tmp_path / "narrow.ome.tif"
    write_labels(path, _labels((10, 40), np.int64, 300))
    back = tifffile.imread(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, _labels((10, 40), np.int64, 300))
    huge = np.full((4, 4), 2**40, np.int64)
    with pytest.raises(WriterError, match="do not fit"):
        write_labels(tmp_path / "huge.ome.tif", huge)
    assert not (tmp_path / "huge.ome.tif").exists()


def test_probabilities_float_clipped_with_channel_names(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.uniform(-0.2, 1.2, size=(3, 40, 50)).astype(np.float64)
    path = tmp_path / "probs.ome.tif"
    write_probabilities(
        path, probs, scale=(0.5, 0.5), unit="mm", channel_names=["bg", "tumour", "edge"]
    )
    back = tifffile.imread(path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, np.clip(probs, 0, 1), atol=1e-7)
    image = read_tiff_stack(path)
    assert image.axes == "yxc"
    assert image.display["name"] == ["probs bg", "probs tumour", "probs edge"]


def test_probabilities_uint8_and_mean_pyramid(tmp_path):
    probs = np.random.default_rng(1).random((520, 516), dtype=np.float32)
    path = tmp_path / "p8.tif"
    write_probabilities(path, probs, dtype="uint8", pyramid=True)
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(520, 516), (260, 258), (130, 129)]
        assert levels[0].dtype == np.uint8
        np.testing.assert_array_equal(levels[0].asarray(), np.round(probs * 255).astype(np.uint8))
        mean = probs.reshape(260, 2, 258, 2).mean(axis=(1, 3))
        expected = np.round(mean * 255).astype(np.uint8)
        np.testing.assert_allclose(levels[1].asarray(), expected, atol=1)  # float32 sum order
    image = read_tiff_stack(path)  # the plain TIFF pyramid reads back without complaint
    assert image.metadata["pyramid_levels_in_file"] == 3 and image.shape == (520, 516)


def test_probabilities_reject_integers_and_bad_names(tmp_path):
    with pytest.raises(WriterError, match="floats"):
        write_probabilities(tmp_path / "p.tif", np.zeros((4, 4), np.int32))
    with pytest.raises(WriterError, match="channel names"):
        write_probabilities(tmp_path / "p.tif", np.zeros((2, 4, 4)), channel_names=["a"])
    with pytest.raises(WriterError, match="dtype"):
        write_probabilities(tmp_path / "p.tif", np.zeros((4, 4)), dtype="float64")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_roundtrip(tmp_path, dtype):
    data = _labels((30, 20), dtype, 300 if dtype == np.uint16 else 200)
    path = tmp_path / "mask.png"
    assert write_labels(path, data) == [str(path)]
    back = _png(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, data)


def test_png_probabilities_as_uint8(tmp_path):
    path = tmp_path / "p.png"
    write_probabilities(path, np.full((6, 6), 0.5, np.float32), dtype="uint8")
    assert (_png(path) == 128).all()
    with pytest.raises(WriterError, match="PNG cannot hold float32"):
        write_probabilities(tmp_path / "f.png", np.zeros((6, 6), np.float32))


def test_png_refuses_3d_floats_and_pyramids(tmp_path):
    with pytest.raises(WriterError, match="PNG holds 2D masks only") as info:
        write_labels(tmp_path / "vol.png", np.zeros((3, 8, 8), np.uint8))
    assert str(tmp_path / "vol.png") in str(info.value)
    with pytest.raises(WriterError, match="integers"):
        write_labels(tmp_path / "f.png", np.zeros((8, 8), np.float32))
    with pytest.raises(WriterError, match="one level"):
        write_labels(tmp_path / "p.png", np.zeros((8, 8), np.uint8), pyramid=True)
    with pytest.raises(WriterError, match="do not fit"):
        write_labels(tmp_path / "big.png", np.full((8, 8), 70000, np.int32))
    assert os.listdir(tmp_path) == []


def test_png_warns_that_scale_is_dropped(tmp_path):
    with pytest.warns(UserWarning, match="PNG stores no pixel size"):
        write_labels(tmp_path / "m.png", np.zeros((8, 8), np.uint8), scale=(0.5, 0.5), unit="mm")


def test_bad_arguments(tmp_path):
    data = np.zeros((8, 8), np.uint8)
    with pytest.raises(WriterError, match="unsupported file type"):
        write_labels(tmp_path / "m.jpg", data)
    with pytest.raises(WriterError, match="scale"):
        write_labels(tmp_path / "m.tif", data, scale=(1.0, 1.0, 1.0), unit="mm")
    with pytest.raises(WriterError, match="unknown unit"):
        write_labels(tmp_path / "m.tif", data, scale=(1.0, 1.0), unit="furlong")
    with pytest.raises(WriterError, match="needs axes"):
        write_labels(tmp_path / "m.tif", np.zeros((2, 2, 2, 2, 2), np.uint8))
    assert os.listdir(tmp_path) == []


def test_napari_scale_with_channel_axis_is_accepted(tmp_path):
    path = tmp_path / "c.tif"
    write_probabilities(
        path, np.zeros((2, 3, 8, 8), np.float32), scale=(1.0, 4.0, 0.5, 0.5), unit="mm"
    )
    image = read_tiff_stack(path)
    assert image.axes == "zyxc" and image.scale == pytest.approx((4.0, 0.5, 0.5))


def _failing_last_block(shape, chunks):
    """A dask array of ones whose last block raises when computed."""
    good = da.ones(shape, dtype=np.uint8, chunks=chunks)
    n_blocks = tuple(len(c) for c in good.chunks)

    def fail_last(x, block_info=None):
        if tuple(block_info[0]["chunk-location"]) == tuple(n - 1 for n in n_blocks):
            raise RuntimeError("model crashed")
        return x

    return good.map_blocks(fail_last, dtype=np.uint8)


@pytest.mark.parametrize("name", ["out.tif", "out.ome.tif", "out.png"])
def test_failure_midway_leaves_nothing(tmp_path, name):
    shape = (1500, 1500) if name.endswith("tif") else (64, 64)
    data = _failing_last_block(shape, (500, 500) if shape[0] > 64 else (32, 32))
    with pytest.raises(RuntimeError, match="model crashed"):
        write_labels(tmp_path / name, data, pyramid=name == "out.ome.tif")
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.tif"
    write_labels(path, np.full((8, 8), 3, np.uint8))
    with pytest.raises(RuntimeError, match="model crashed"):
        write_labels(path, _failing_last_block((64, 64), (32, 32)))
    assert (tifffile.imread(path) == 3).all()
    assert os.listdir(tmp_path) == ["keep.tif"]
