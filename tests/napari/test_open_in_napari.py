"""Each reader through napari's own reader-plugin path, in a real viewer (Xvfb)."""

import numpy as np
import pytest

from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.mri import write_lgg_patient, write_nifti_volume, write_tiff_stack
from napari_neuroseg.samples.slide import write_synthetic_slide

pytestmark = pytest.mark.gui
PLUGIN = "napari-neuroseg"


def test_slide_is_a_lazy_multiscale_layer_in_microns(make_napari_viewer, tmp_path):
    path = write_synthetic_slide(tmp_path / "s.tif", size=(3000, 2400), tile=256, mpp=0.5,
                                 layout="pages", compression="zlib")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.multiscale and layer.rgb
    assert len(layer.data) >= 2 and max(layer.data[-1].shape[:2]) <= 2048
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    assert layer.metadata["neuroseg"]["unit"] == "um"
    assert type(layer.data[0]).__module__.startswith("dask")


def test_ct_series_is_a_volume_in_mm_with_brain_window(make_napari_viewer, tmp_path):
    write_ct_series(tmp_path / "ct", n_slices=8, size=64, spacing=(5.0, 0.7, 0.7),
                    shuffle_names=True)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)
    assert layer.data.shape == (8, 64, 64)
    np.testing.assert_allclose(layer.scale, (5.0, 0.7, 0.7), rtol=1e-3)
    assert tuple(layer.contrast_limits) == (0, 80)
    assert layer.metadata["neuroseg"]["modality"] == "CT"


def test_lgg_patient_gives_channel_layers_and_a_mask(make_napari_viewer, tmp_path):
    folder = write_lgg_patient(tmp_path / "lgg", patient_id="TCGA_XX_0001_20000101",
                               n_slices=12, size=64)
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)
    kinds = sorted(type(layer).__name__ for layer in layers)
    assert kinds == ["Image", "Image", "Image", "Labels"]
    labels = next(layer for layer in layers if type(layer).__name__ == "Labels")
    flair = next(layer for layer in layers if layer.name.endswith("FLAIR"))
    assert labels.data.shape == flair.data.shape == (12, 64, 64)
    np.testing.assert_allclose(labels.scale, flair.scale)
    assert set(np.unique(np.asarray(labels.data))) <= {0, 1}


def test_nifti_is_an_axial_volume_in_mm(make_napari_viewer, tmp_path):
    path = write_nifti_volume(tmp_path / "brain.nii.gz", n_slices=10, size=32,
                              zooms=(1.0, 1.0, 2.5))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.shape == (10, 32, 32)
    np.testing.assert_allclose(layer.scale, (2.5, 1.0, 1.0))
    assert layer.metadata["neuroseg"]["unit"] == "mm"


def test_tiff_stack_takes_its_spacing_from_imagej_metadata(make_napari_viewer, tmp_path):
    path = write_tiff_stack(tmp_path / "stack.tif", n_slices=7, size=40,
                            spacing=(2.0, 0.5, 0.5), unit="mm")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.shape == (7, 40, 40)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))


def test_unreadable_input_adds_no_layer(make_napari_viewer, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    viewer = make_napari_viewer()
    with pytest.raises(ValueError), pytest.warns(UserWarning, match="bad.dcm"):
        viewer.open(str(bad), plugin=PLUGIN)
    assert len(viewer.layers) == 0
