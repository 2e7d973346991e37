"""The npe2 reader hook: layer data for what it handles, ``None`` (never an exception) otherwise."""

import warnings
from pathlib import Path

import numpy as np
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


# --- issue 12: what File > Open offers the plugin for, and what the user then gets ------------

PLUGIN = "napari-neuroseg"


MANIFEST = Path(__file__).resolve().parents[1] / "napari.yaml"


def _our_readers(name: str) -> list[str]:
    """The plugin's readers npe2 offers for a file ``name`` (the repository's manifest)."""
    import npe2

    manager = npe2.PluginManager()
    manager.register(npe2.PluginManifest.from_file(MANIFEST))
    return [r.command for r in manager.iter_compatible_readers([name])]


def test_manifest_offers_the_reader_only_for_what_it_reads(tmp_path):
    import yaml

    patterns = yaml.safe_load(MANIFEST.read_text())["contributions"]["readers"][0]
    assert "*" not in patterns["filename_patterns"]  # it used to claim every file
    assert patterns["accepts_directories"] is True  # folders (DICOM, LGG) still come here
    for name in ("notes.txt", "table.csv", "movie.mp4", "data.zarr.json"):
        assert _our_readers(str(tmp_path / name)) == [], name
    for name in ("tile.png", "TILE.PNG", "patch.jpg", "patch.jpeg", "slice.dcm", "slide.svs",
                 "stack.tif", "volume.nii.gz"):
        assert _our_readers(str(tmp_path / name)) == [f"{PLUGIN}.get_reader"], name


def _png(path, shape=(600, 800)):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.mark.gui
def test_png_opens_in_napari_as_one_rgb_slide_in_um_with_the_gui_hint(make_napari_viewer,
                                                                      tmp_path):
    viewer = make_napari_viewer(show=True)
    path = tmp_path / "he_tile.png"
    pixels = _png(path)
    with pytest.warns(UserWarning, match="MPP override"):
        (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.rgb and layer.data.shape == (600, 800, 3)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    meta = layer.metadata["neuroseg"]
    assert meta["modality"] == "slide" and meta["mpp_known"] is False
    (warning,) = meta["warnings"]
    assert "Open image" in warning and "read_slide(" not in warning
    np.testing.assert_array_equal(np.asarray(layer.data[100:110, 200:210]),
                                  pixels[100:110, 200:210])


@pytest.mark.gui
def test_small_rgb_tiff_opens_in_napari_as_one_rgb_layer(make_napari_viewer, tmp_path):
    import tifffile

    viewer = make_napari_viewer(show=True)
    path = tmp_path / "he_tile.tif"
    tifffile.imwrite(path, np.zeros((600, 800, 3), np.uint8), photometric="rgb")
    with pytest.warns(UserWarning, match="MPP override"):
        layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1 and len(viewer.layers) == 1  # not three channel layers
    assert layers[0].rgb and [str(u) for u in layers[0].units] == ["micrometer"] * 2


@pytest.mark.gui
def test_lgg_patient_without_masks_and_one_slice_open_for_the_mri_widget(make_napari_viewer,
                                                                         tmp_path):
    from napari_neuroseg.samples.mri import write_lgg_patient
    from napari_neuroseg.widgets.mri_widget import MRIWidget

    pid = "TCGA_XX_0000_20000101"
    folder = write_lgg_patient(tmp_path, patient_id=pid, n_slices=4, size=32)
    for mask in folder.glob("*_mask.tif"):
        mask.unlink()
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert [layer.name for layer in layers] == [f"{pid} pre-contrast", f"{pid} FLAIR",
                                                f"{pid} post-contrast"]
    assert all(layer.metadata["neuroseg"]["modality"] == "MR" for layer in layers)
    viewer.layers.clear()
    layers = viewer.open(str(folder / f"{pid}_3.tif"), plugin=PLUGIN)
    assert len(layers) == 3 and layers[1].data.shape == (1, 32, 32)
    widget = MRIWidget(viewer)
    viewer.window.add_dock_widget(widget)
    listed = [id(c) for c in widget.layer.choices]
    assert len(listed) == 1 and listed[0] in {id(layer) for layer in layers}  # the stack


@pytest.mark.gui
def test_folder_of_many_lgg_patients_is_refused_with_a_pointer(make_napari_viewer, tmp_path):
    import shutil

    from napari_neuroseg.samples.mri import write_lgg_patient

    mixed = tmp_path / "slices"
    mixed.mkdir()
    for pid in ("TCGA_AA_0001_19990101", "TCGA_AA_0002_19990101", "TCGA_AA_0003_19990101"):
        for f in write_lgg_patient(tmp_path / "src", patient_id=pid, n_slices=2,
                                   size=16).iterdir():
            shutil.copy(f, mixed / f.name)
    viewer = make_napari_viewer(show=True)
    with pytest.warns(UserWarning, match="3 patients.*one patient at a time"), \
            pytest.raises(ValueError, match="returned no data"):
        viewer.open(str(mixed), plugin=PLUGIN)
    assert len(viewer.layers) == 0
