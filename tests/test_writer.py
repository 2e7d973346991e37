"""npe2 writer hooks, driven through napari's layer save path."""

import numpy as np
import pytest
import tifffile
from skimage.io import imread

pytestmark = pytest.mark.gui
PLUGIN = "napari-neuroseg"


def test_labels_layer_saves_as_png_and_tiff(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:20, 10:30] = 3
    layer = viewer.add_labels(labels, scale=(0.5, 0.5), name="mask")
    png = layer.save(str(tmp_path / "mask.png"), plugin=PLUGIN)[0]
    tif = layer.save(str(tmp_path / "mask.tif"), plugin=PLUGIN)[0]
    np.testing.assert_array_equal(imread(png), labels)
    np.testing.assert_array_equal(tifffile.imread(tif), labels)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_multiscale_labels_save_as_pyramidal_ome_tiff(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    base = np.zeros((512, 512), dtype=np.uint16)
    base[100:300, 50:400] = 2
    layer = viewer.add_labels([base, base[::2, ::2], base[::4, ::4]], scale=(0.25, 0.25))
    out = layer.save(str(tmp_path / "labels.ome.tif"), plugin=PLUGIN)[0]
    with tifffile.TiffFile(out) as tf:
        levels = tf.series[0].levels
        assert len(levels) == 3
        np.testing.assert_array_equal(levels[0].asarray(), base)


def test_probability_image_saves_as_float_tiff(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    prob = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    layer = viewer.add_image(prob, name="p")
    out = layer.save(str(tmp_path / "p.tif"), plugin=PLUGIN)[0]
    np.testing.assert_allclose(tifffile.imread(out), prob, atol=1e-6)


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nii"])
def test_labels_over_a_nifti_volume_save_as_nifti_with_its_affine(
    make_napari_viewer, tmp_path, name
):
    import nibabel as nib

    from napari_neuroseg.samples.mri import write_nifti_volume

    affine = np.array([[0.0, 0.0, -0.8, 40.0], [1.2, 0.0, 0.0, -60.0],
                       [0.0, 3.0, 0.0, -10.0], [0.0, 0.0, 0.0, 1.0]])  # voxel axes A, S, L
    data = np.arange(6 * 5 * 7, dtype=np.int16).reshape(6, 5, 7)
    source = write_nifti_volume(tmp_path / "flair.nii.gz", data=data, affine=affine)
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(source), plugin=PLUGIN)
    # a segmentation over it, as the MRI widget makes one: same placement, source recorded
    labels = viewer.add_labels(
        (np.asarray(image.data) % 5 == 0).astype(np.uint8), scale=image.scale,
        translate=image.translate, metadata={"neuroseg": {"source": str(source)}})
    out = labels.save(str(tmp_path / name), plugin=PLUGIN)[0]
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), data % 5 == 0)
    # the saved mask opens back exactly over the image
    (again,) = viewer.open(out, plugin=PLUGIN)
    np.testing.assert_allclose(again.translate, image.translate)
    np.testing.assert_allclose(again.scale, image.scale)
