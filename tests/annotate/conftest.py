"""Shared by the export tests: a small synthetic slide and labels placed on its grid."""

import numpy as np
import pytest

from napari_neuroseg.io import open_image
from napari_neuroseg.samples.slide import write_synthetic_slide


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    write_synthetic_slide(path, size=(1024, 1024), tile=256, levels=3, mpp=0.5,
                          compression="zlib", fast=True)
    (image,) = open_image(path)
    return image


def slide_geometry(image, mpp, offset):
    """napari scale/translate of labels on the working grid at ``mpp``, at ``offset``."""
    base = image.scale[0]
    t0 = (mpp - base) / 2
    return (mpp, mpp), (t0 + offset[0] * mpp, t0 + offset[1] * mpp)


def tissue_labels(shape):
    labels = np.zeros(shape, np.uint8)
    labels[10:40, 10:50] = 1
    labels[30:60, 40:70] = 2
    labels[shape[0] - 20:, : shape[1] // 2] = 3
    return labels
