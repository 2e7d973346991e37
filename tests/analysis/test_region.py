"""One region of a slide through a model: capping, nuclei instances, virtual H&E."""

import dataclasses

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_neuroseg.analysis.region import (
    DEFAULT_POSTPROCESS,
    cap_region,
    postprocess_options,
    segment_nuclei,
    to_uint8_rgb,
    translate_stain,
)
from napari_neuroseg.analysis.slide import AnalysisError, plan_slide
from napari_neuroseg.engine import Region
from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.hovernet import hv_targets
from napari_neuroseg.models.registry import ModelRegistry

NUCLEUS_RGB = (90, 40, 140)
BACKGROUND_RGB = (235, 190, 210)


def disc_slide(shape=(600, 700), mpp=0.5, spacing=30, radius=7, translate=(100.0, -40.0)):
    """An H&E-like image with one dark disc every ``spacing`` pixels; (image, n_discs)."""
    image = np.empty((*shape, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    n = 0
    for cy in range(spacing // 2, shape[0] - radius, spacing):
        for cx in range(spacing // 2, shape[1] - radius, spacing):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = NUCLEUS_RGB
            n += 1
    lazy = LazyImage(levels=[da.from_array(image, chunks=(256, 256, 3))], axes="yxc",
                     scale=(mpp, mpp), unit="um", name="discs", modality="slide",
                     source="memory:discs", translate=translate)
    return lazy, n


def oracle_hovernet(batch):
    """A perfect HoVer-Net for dark discs: NP from darkness, HV from the discs it sees."""
    out = np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)
    for i, patch in enumerate(batch):
        dark = patch.mean(axis=0) < 150
        out[i, 1] = dark
        out[i, 0] = 1 - out[i, 1]
        out[i, 2:4] = hv_targets(ndi.label(dark)[0])
    return out


oracle_hovernet.output_channels = 4


def identity_stain(batch):
    """An 'IHC -> H&E' model that returns its input in [0, 1] (what a ModelRunner returns)."""
    return (batch / 255.0).astype(np.float32)


identity_stain.output_channels = 3


def spec(name, **input_changes):
    base = ModelRegistry().get(name)
    return dataclasses.replace(base, input=dataclasses.replace(base.input, **input_changes))


def test_cap_region_keeps_the_centre_and_the_limit():
    image, _ = disc_slide(shape=(600, 700), mpp=0.25)  # 0.5 µm model: factor 2
    plan = plan_slide(image, spec("nuclei-hovernet"), tissue_only=False)
    region, capped = cap_region(Region(0, 0, 600, 700), plan, max_size=100)
    assert capped
    working = plan.choice.region_from_base(region, plan.working_shape)
    assert max(working.shape) <= 100
    assert region.center == pytest.approx((300, 350), abs=1)
    same, capped = cap_region(Region(10, 20, 110, 120), plan, max_size=100)
    assert same == Region(10, 20, 110, 120) and not capped


def test_nuclei_count_density_and_alignment():
    image, n_discs = disc_slide()
    plan = plan_slide(image, spec("nuclei-hovernet"), tissue_only=False)
    region = Region(0, 0, 600, 700)
    result = segment_nuclei(plan, oracle_hovernet, region)
    labels = result.data
    assert labels.dtype == np.int32 and labels.shape == (600, 700)
    ids = np.unique(labels[labels > 0])
    assert result.count == len(ids) == n_discs  # one instance per disc, none split or merged
    area = 600 * 700 * (0.5e-3) ** 2
    assert result.area_mm2 == pytest.approx(area)
    assert result.density == pytest.approx(n_discs / area)
    # aligned: the world position of a label pixel is that of the source pixel
    assert result.scale == pytest.approx((0.5, 0.5))
    assert result.translate == pytest.approx((100.0, -40.0))
    dark = np.asarray(image.levels[0]).mean(axis=2) < 150
    assert (labels > 0)[dark].mean() > 0.95 and (labels > 0)[~dark].mean() < 0.01


def test_nuclei_in_a_sub_region_at_a_coarser_model_resolution():
    image, _ = disc_slide(shape=(600, 700), mpp=0.25, radius=9)  # model at 0.5: half size
    plan = plan_slide(image, spec("nuclei-hovernet"), tissue_only=False)
    region = Region(100, 200, 500, 600)
    result = segment_nuclei(plan, oracle_hovernet, region)
    assert result.working_region == Region(50, 100, 250, 300)
    assert result.data.shape == (200, 200)
    assert result.scale == pytest.approx((0.5, 0.5))
    # working pixel (50, 100) covers level-0 pixels 100-101, 200-201: its centre in world
    # units is 100.5 * 0.25 + 100 (y) and 200.5 * 0.25 - 40 (x)
    assert result.translate == pytest.approx((100 + 100.5 * 0.25, -40 + 200.5 * 0.25))
    assert result.count == len(np.unique(result.data)) - 1 > 0


def test_stopped_nuclei_run_is_incomplete_and_empty():
    image, _ = disc_slide()
    plan = plan_slide(image, spec("nuclei-hovernet"), tissue_only=False)
    result = segment_nuclei(plan, oracle_hovernet, should_stop=lambda: True)
    assert not result.complete and result.count == 0


def test_postprocess_options_from_spec_and_overrides():
    base = ModelRegistry(bundled=False).get("nuclei-hovernet")  # the declared spec
    assert postprocess_options(base) == DEFAULT_POSTPROCESS
    saved = dataclasses.replace(base, extra={**base.extra, "postprocess": {"ksize": 21}})
    assert postprocess_options(saved)["ksize"] == 21
    assert postprocess_options(saved, {"min_size": 4})["min_size"] == 4
    with pytest.raises(ValueError, match="ksize"):
        postprocess_options(base, {"ksize": 4})


def test_stain_output_is_uint8_rgb_aligned_with_the_source():
    image, _ = disc_slide(shape=(300, 400))
    plan = plan_slide(image, spec("ihc-to-he"))
    result = translate_stain(plan, identity_stain, Region(40, 60, 240, 360))
    assert result.data.dtype == np.uint8 and result.data.shape == (200, 300, 3)
    source = np.asarray(image.levels[0])[40:240, 60:360]
    np.testing.assert_array_equal(result.data, source)  # identity model: the source pixels
    assert result.translate == pytest.approx((100 + 40 * 0.5, -40 + 60 * 0.5))


def test_uint8_conversion_and_wrong_models():
    values = np.array([0.0, 0.5, 1.0, 1.2], np.float32).reshape(1, 1, 4).repeat(3, axis=0)
    rgb = to_uint8_rgb(values, ModelRegistry().get("ihc-to-he"))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 128, 255, 255]
    image, _ = disc_slide(shape=(100, 100))
    with pytest.raises(AnalysisError, match="not a nuclear"):
        segment_nuclei(plan_slide(image, spec("ihc-to-he")), identity_stain)
    with pytest.raises(AnalysisError, match="not an image-translation"):
        translate_stain(plan_slide(image, spec("nuclei-hovernet"), tissue_only=False),
                        oracle_hovernet)
