"""Planning export items: where labels sit on a slide, and what is refused."""

import numpy as np
import pytest

from napari_neuroseg.annotate.export_plan import slide_items, slide_region
from napari_neuroseg.dataset import DatasetError

from .conftest import slide_geometry


def test_labels_off_the_grid_or_the_slide_are_refused(slide):
    scale, translate = slide_geometry(slide, 1.0, (0, 0))
    with pytest.raises(DatasetError, match="not on the slide's pixel grid"):
        slide_region(slide, scale, (translate[0] + 0.4, translate[1]))
    region = slide_region(slide, *slide_geometry(slide, 1.0, (600, 0)))
    with pytest.raises(DatasetError, match="lie outside"):
        slide_items(slide, np.ones((8, 8), np.uint8), region)
    # labels overhanging the edge are clipped to the slide
    region = slide_region(slide, *slide_geometry(slide, 1.0, (500, 500)))
    (item,) = slide_items(slide, np.ones((40, 40), np.uint8), region)
    assert item.shape == (12, 12, 3) and item.mask.shape == (12, 12)
