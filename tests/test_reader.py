"""The npe2 reader hook: layer data for what it handles, ``None`` (never an exception) otherwise."""

import warnings

import pytest

from napari_neuroseg._reader import get_reader, read_layers
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.slide import write_synthetic_slide


@pytest.fixture
def slide_path(tmp_path):
    return write_synthetic_slide(tmp_path / "slide.tif", size=(1024, 1536), tile=256, mpp=0.5,
                                 layout="pages", compression="zlib")


def test_unsupported_files_get_no_reader(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert get_reader(str(text)) is None
    assert get_reader(str(tmp_path / "missing.svs")) is None
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert get_reader(str(empty)) is None


def test_slide_gives_multiscale_layer_data(slide_path):
    reader = get_reader(str(slide_path))
    assert reader is not None
    ((data, kwargs, kind),) = reader(str(slide_path))
    assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"]
    assert kwargs["scale"] == (0.5, 0.5)
    assert data[0].shape == (1024, 1536, 3)


def test_a_list_of_dicom_files_is_one_series(tmp_path):
    files = write_ct_series(tmp_path / "ct", n_slices=6, size=32)
    reader = get_reader([str(f) for f in files])
    assert reader is not None
    ((data, _, kind),) = reader([str(f) for f in files])
    assert kind == "image" and data.shape == (6, 32, 32)


def test_corrupt_slide_gives_none_and_a_warning_naming_it(slide_path, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(slide_path.read_bytes()[: slide_path.stat().st_size // 3])
    reader = get_reader(str(broken))
    if reader is None:  # detection already refused it: also a valid "None to napari"
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_layers(str(broken)) is None
    assert any(str(broken) in str(w.message) for w in caught)
