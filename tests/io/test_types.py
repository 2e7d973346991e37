import dask.array as da
import pytest

from napari_neuroseg.io import LazyImage, ReaderError
from napari_neuroseg.io._describe import describe

from .conftest import lazy_slide


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


def test_describe_lists_levels_metadata_and_warnings():
    text = describe(lazy_slide())
    assert "Levels: 2 (64x96, 32x48)" in text
    assert "Vendor: aperio" in text
    assert "Pixel size: 0.5 x 0.5 um" in text
    assert "Warning: MPP unknown" in text
