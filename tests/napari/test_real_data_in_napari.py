"""The real samples in ../shared/data opened through napari (skipped when absent)."""

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.realdata]
PLUGIN = "napari-neuroseg"


@pytest.mark.parametrize(
    ("name", "n_native", "mpp"),
    [("cmu-1-small-region.svs", 1, 0.499), ("tcga-cr-7395-01a-01-ts1.svs", 2, None)],
)
def test_svs_slides(make_napari_viewer, shared_data, name, n_native, mpp):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(shared_data / "wsi" / name), plugin=PLUGIN)
    meta = layer.metadata["neuroseg"]
    assert layer.multiscale and layer.rgb
    assert max(layer.data[-1].shape[:2]) <= 2048
    if mpp is None:
        assert meta["mpp_known"] is False and any("MPP" in w for w in meta["warnings"])
    else:
        np.testing.assert_allclose(layer.scale, (mpp, mpp), rtol=1e-3)


def test_ge_head_ct_reports_tilt_and_spacing(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(shared_data / "ct_head_ge"), plugin=PLUGIN)
    meta = layer.metadata["neuroseg"]
    assert layer.data.shape == (28, 512, 512)
    assert abs(meta["tilt_deg"] - 18.5) < 0.2
    assert meta["uniform_spacing"] is False
    np.testing.assert_allclose(layer.scale[1:], (0.488, 0.488), atol=1e-3)


def test_t1_mprage_dicom(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(shared_data / "mri_t1_dicom"), plugin=PLUGIN)
    assert layer.data.shape == (176, 256, 256)
    np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.0), atol=0.01)
    assert layer.metadata["neuroseg"]["modality"] == "MR"


def test_lgg_slices_folder(make_napari_viewer, shared_data):
    """21 patients' loose slices made 84 layers and blocked napari for 15 s (issue 12): the
    folder is refused, pointing to one patient at a time; one slice of it opens."""
    viewer = make_napari_viewer()
    folder = shared_data / "lgg_mri_slices"
    with pytest.warns(UserWarning, match="21 patients.*one patient at a time"), \
            pytest.raises(ValueError, match="returned no data"):
        viewer.open(str(folder), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    one = sorted(p for p in folder.glob("TCGA_*.tif") if not p.stem.endswith("_mask"))[0]
    layers = viewer.open(str(one), plugin=PLUGIN)
    assert layers and all(layer.data.shape[-2:] == (256, 256) for layer in layers)
