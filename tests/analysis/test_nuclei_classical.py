"""Tests of the classical (hematoxylin, Otsu, watershed) nuclear instance segmentation."""

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from napari_neuroseg.analysis.nuclei_classical import (
    ClassicalNucleiOptions,
    classical_nuclei,
    hematoxylin_channel,
)

TILES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nuclei_lgg_tiles"
#: Hematoxylin-like purple on pink eosin background, uint8 RGB.
NUCLEUS_RGB = (70, 40, 140)
BACKGROUND_RGB = (240, 200, 220)


def he_discs(centres, radius: int = 10, shape=(96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic H&E tile with purple discs on pink, and the discs' instance labels."""
    image = np.empty((*shape, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    truth = np.zeros(shape, np.int32)
    for k, centre in enumerate(centres, start=1):
        rr, cc = disk(centre, radius, shape=shape)
        image[rr, cc] = NUCLEUS_RGB
        truth[rr, cc] = k
    return image, truth


def test_hematoxylin_higher_in_nuclei():
    image, truth = he_discs([(48, 48)])
    stain = hematoxylin_channel(image)
    assert stain.shape == truth.shape
    assert stain[truth > 0].mean() > stain[truth == 0].mean() + 0.05


def test_hematoxylin_rejects_grey():
    with pytest.raises(ValueError, match="RGB"):
        hematoxylin_channel(np.zeros((8, 8)))


def test_two_touching_discs_are_split():
    image, truth = he_discs([(48, 38), (48, 56)])  # radius 10, centres 18 px apart: overlap
    before = image.copy()
    labels = classical_nuclei(image, ClassicalNucleiOptions(mpp=1.0, nucleus_radius_um=8.0))
    np.testing.assert_array_equal(image, before)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    # each disc's centre lies in a different instance, and the union covers both discs
    assert labels[48, 34] != labels[48, 60]
    assert {int(labels[48, 34]), int(labels[48, 60])} == {1, 2}
    union = (labels > 0) & (truth > 0)
    assert union.sum() / (truth > 0).sum() > 0.9


def test_separate_discs_one_instance_each():
    image, _ = he_discs([(20, 20), (20, 75), (75, 48)])
    labels = classical_nuclei(image, ClassicalNucleiOptions(mpp=1.0, nucleus_radius_um=8.0))
    assert labels.max() == 3


def test_empty_white_image_gives_no_instances():
    white = np.full((64, 64, 3), 255, np.uint8)
    labels = classical_nuclei(white)
    assert labels.shape == (64, 64)
    assert not labels.any()


def test_uniform_pink_gives_no_instances():
    pink = np.empty((64, 64, 3), np.uint8)
    pink[:] = BACKGROUND_RGB
    assert not classical_nuclei(pink).any()


def test_options_pixels_scale_with_resolution():
    assert ClassicalNucleiOptions(mpp=0.5, nucleus_radius_um=4.0).pixels()[0] == 8
    assert ClassicalNucleiOptions(mpp=0.25, nucleus_radius_um=4.0).pixels()[0] == 16
    assert ClassicalNucleiOptions(min_distance=3, min_size=5, max_hole=7).pixels() == (3, 5, 7)
    with pytest.raises(ValueError):
        ClassicalNucleiOptions(mpp=0)


def test_real_tile_plausible_count():
    images = TILES / "raw_image"
    if not images.is_dir():
        pytest.skip("../shared/data/nuclei_lgg_tiles is absent")
    import skimage.io

    from napari_neuroseg.dataset.convert_nuclei import xml_polygons

    path = sorted(images.glob("*.png"))[0]
    image = skimage.io.imread(path)
    labels = classical_nuclei(image)
    annotated = len(xml_polygons(TILES / "contour_annotation_xml" / f"{path.stem}_data.xml"))
    assert labels.shape == image.shape[:2]
    assert 0.5 * annotated <= labels.max() <= 2.0 * annotated
