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


def test_volume_items_skip_absent_slices_and_keep_slice_numbers(tmp_path):
    """A Kaggle LGG patient with slices 1, 2, 5, 6: the zero planes of the gap are not
    exported, and each item keeps its slice's own number and file."""
    from napari_neuroseg.annotate.export_plan import volume_items
    from napari_neuroseg.io.mri import read_lgg_folder
    from napari_neuroseg.samples.mri import write_lgg_patient

    pid = "TCGA_AA_0001_19990101"
    folder = write_lgg_patient(tmp_path, patient_id=pid, n_slices=6, size=16)
    for n in (3, 4):
        (folder / f"{pid}_{n}.tif").unlink()
        (folder / f"{pid}_{n}_mask.tif").unlink()
    image, labels = read_lgg_folder(folder)
    items = volume_items(image, task="mri", labels=labels.levels[0].compute())
    assert [item.meta["slice_index"] for item in items] == [1, 2, 5, 6]
    assert items[2].meta["source_path"] == str(folder / f"{pid}_5.tif")
    np.testing.assert_array_equal(items[2].read_image(), image.levels[0][4].compute())
