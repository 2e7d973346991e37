"""The classical quick preview of a region's nuclei: the model's grid, nuclei found, capped."""

import numpy as np
import pytest

from napari_neuroseg.analysis import plan_slide
from napari_neuroseg.analysis.nuclei_preview import drop_large, preview_nuclei, preview_step
from napari_neuroseg.analysis.region import segment_nuclei
from napari_neuroseg.engine import Region
from napari_neuroseg.io import open_image
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.slide import write_synthetic_slide


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    path = write_synthetic_slide(tmp_path_factory.mktemp("np") / "s.tif", size=(768, 1024),
                                 tile=256, mpp=0.5, layout="pages", compression="zlib",
                                 levels=2)
    spec = ModelRegistry().get("nuclei-hovernet")
    return plan_slide(open_image(path)[0], spec, tissue_only=False)


class Dark:
    """A stand-in HoVer-Net output: foreground where the pixels are dark, flat h/v maps."""

    output_channels = 4

    def __call__(self, batch):
        out = np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)
        dark = batch.mean(axis=1) < 140
        out[:, 1], out[:, 0] = dark, ~dark
        return out


@pytest.mark.parametrize(("shape", "step"), [((100, 100), 1), ((640, 512), 1),
                                             ((641, 512), 2), ((1280, 1024), 2),
                                             ((1281, 1024), 3)])
def test_step_brings_the_region_under_the_pixel_budget(shape, step):
    assert preview_step(shape) == step
    assert (shape[0] / step) * (shape[1] / step) <= 640 * 512 * 1.01


def test_preview_lies_on_the_models_grid_and_finds_the_dark_nuclei(plan):
    region = Region(100, 150, 500, 650)
    preview = preview_nuclei(plan, region, max_size=1024)
    model = segment_nuclei(plan, Dark(), region, max_size=1024)
    assert preview.preview and "not the model" in preview.preview and model.preview == ""
    assert preview.region == model.region and preview.working_region == model.working_region
    assert preview.translate == model.translate and preview.scale == model.scale
    assert preview.data.shape == model.data.shape and preview.data.dtype == np.int32
    rgb = np.asarray(plan.array[region.y0:region.y1, region.x0:region.x1])[..., :3]
    dark = rgb.mean(axis=2) < 140
    found = preview.data > 0
    assert preview.count > 5
    assert found[dark].mean() > 0.6 and dark[found].mean() > 0.6


def test_a_large_region_is_subsampled_and_capped_like_the_model(plan):
    full = preview_nuclei(plan, None, max_size=512, max_pixels=64 * 64)
    model = segment_nuclei(plan, Dark(), None, max_size=512)
    assert full.capped and model.capped and full.region == model.region
    assert full.data.shape == model.data.shape and max(full.data.shape) <= 512
    step = preview_step(full.data.shape, 64 * 64)
    assert step == 8 and f"at {0.5 * step:.3g} µm/px" in full.preview
    assert any("only its centre" in note for note in full.notes)
    # every step x step block holds one label (the labels were repeated back)
    blocks = full.data[:504, :504].reshape(63, 8, 63, 8)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_blobs_many_nuclei_wide_are_left_out_and_the_rest_renumbered():
    labels = np.zeros((40, 40), np.int32)
    labels[:3, :3] = 2  # 9 px
    labels[10:30, 10:30] = 5  # 400 px: a blob
    labels[35:, 35:] = 7  # 25 px
    out = drop_large(labels, 100)
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 1, 2}
    assert (out[:3, :3] == 1).all() and (out[35:, 35:] == 2).all() and not out[10:30, 10:30].any()
