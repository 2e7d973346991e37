import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io import LazyImage, ReaderError, layer_kwargs, to_layer_data
from napari_neuroseg.io._describe import describe


def _slide() -> LazyImage:
    levels = [da.zeros((64, 96, 3), dtype=np.uint8, chunks=16), da.zeros((32, 48, 3), np.uint8)]
    return LazyImage(
        levels=levels, axes="yxc", scale=(0.5, 0.5), unit="um", name="s", modality="slide",
        source="/x/s.svs", display={"rgb": True}, metadata={"vendor": "aperio"},
        warnings=["MPP unknown"],
    )


def test_reader_error_names_file_and_problem():
    err = ReaderError("/data/a.svs", "truncated")
    assert str(err) == "/data/a.svs: truncated"
    assert err.path == "/data/a.svs" and err.problem == "truncated"
    assert isinstance(err, ValueError)


def test_lazy_image_validates_axes_and_scale():
    with pytest.raises(ValueError, match="axes"):
        LazyImage([da.zeros((4, 4))], "zyx", (1, 1), "mm", "v", "CT", "f")
    with pytest.raises(ValueError, match="scale"):
        LazyImage([da.zeros((4, 4, 4))], "zyx", (1, 1), "mm", "v", "CT", "f")
    with pytest.raises(ValueError, match="at least one level"):
        LazyImage([], "zyx", (1, 1, 1), "mm", "v", "CT", "f")


def test_slide_layer_data_is_multiscale_with_physical_scale():
    image = _slide()
    assert image.downsamples() == [1.0, 2.0]
    ((data, kwargs, kind),) = to_layer_data([image])
    assert kind == "image" and isinstance(data, list) and len(data) == 2
    assert kwargs["multiscale"] is True and kwargs["rgb"] is True
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["units"] == ("um", "um")
    meta = kwargs["metadata"]["neuroseg"]
    assert meta["unit"] == "um" and meta["vendor"] == "aperio"
    assert meta["warnings"] == ["MPP unknown"]


def test_volume_layer_data_is_single_array():
    vol = LazyImage([da.zeros((3, 8, 8), np.int16)], "zyx", (4.0, 0.5, 0.5), "mm", "ct", "CT", "d",
                    translate=(1.0, 2.0, 3.0))
    ((data, kwargs, _),) = to_layer_data([vol])
    assert isinstance(data, da.Array) and "multiscale" not in kwargs
    assert kwargs["translate"] == (1.0, 2.0, 3.0)


def test_channel_image_needs_rgb_or_channel_axis():
    img = LazyImage([da.zeros((2, 8, 8, 3), np.uint8)], "zyxc", (1, 1, 1), "mm", "m", "MR", "f")
    with pytest.raises(ValueError, match="channel_axis"):
        layer_kwargs(img)
    img.display = {"channel_axis": 3}
    assert layer_kwargs(img)["channel_axis"] == 3


def test_describe_lists_levels_metadata_and_warnings():
    text = describe(_slide())
    assert "Levels: 2 (64x96, 32x48)" in text
    assert "Vendor: aperio" in text
    assert "Pixel size: 0.5 x 0.5 um" in text
    assert "Warning: MPP unknown" in text
