"""Where a slide's label store lives, and the working grid it is painted on."""

import dataclasses

import numpy as np

from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS
from napari_neuroseg.annotate.slidegrid import (
    default_store_path,
    resample_labels,
    slide_grid,
    slide_identity,
)
from napari_neuroseg.engine import Region

LGG = STANDARD_CLASS_MAPS["LGG tissue (4 classes)"]


def test_default_store_path(tmp_path, monkeypatch):
    slide = tmp_path / "slide.tif"
    slide.write_bytes(b"abc" * 1000)
    path = default_store_path(slide, LGG, 1.0)
    assert path.parent == tmp_path / "slide.tif.neuroseg-labels"
    assert path != default_store_path(slide, STANDARD_CLASS_MAPS["MRI FLAIR abnormality"], 1.0)
    assert path != default_store_path(slide, LGG, 0.5)
    assert path == default_store_path(slide, LGG, 1.0)
    cached = default_store_path(slide, LGG, 1.0, beside_data=False, cache_dir=tmp_path / "c")
    assert cached.parent == tmp_path / "c" and cached.name.startswith(slide_identity(slide)[:16])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert str(default_store_path("not a file", LGG, 1.0)).startswith(str(tmp_path / "xdg"))


def test_slide_identity_follows_content(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_bytes(bytes(range(256)) * 10_000)
    b.write_bytes(a.read_bytes())
    assert slide_identity(a) == slide_identity(b)  # a copy is the same slide
    b.write_bytes(a.read_bytes()[:-1] + b"x")
    assert slide_identity(a) != slide_identity(b)


def test_slide_grid_matches_the_analysis_plan(tmp_path):
    from napari_neuroseg.analysis import plan_slide
    from napari_neuroseg.io import open_image
    from napari_neuroseg.models.registry import ModelRegistry
    from napari_neuroseg.samples.slide import write_synthetic_slide

    path = write_synthetic_slide(tmp_path / "s.tif", size=(512, 768), tile=256, mpp=0.5,
                                 layout="pages", compression="zlib", levels=2)
    image = open_image(path)[0]
    # the declared spec (the shipped weights work at 10 µm/px): level 1 (1 µm/px) resampled 5x
    lgg = ModelRegistry(bundled=False).get("lgg-tissue")
    at_level_1 = dataclasses.replace(lgg, input=dataclasses.replace(lgg.input, resolution=1.0))
    for spec, shape in [(lgg, (51, 77)), (at_level_1, (256, 384))]:
        mpp = spec.input.resolution
        plan = plan_slide(image, spec, stain_normalization=False, tissue_only=False)
        grid = slide_grid(image, mpp)
        assert grid.shape == plan.working_shape == shape
        assert grid.level == plan.choice.level == 1 and grid.mpp == mpp
        assert grid.scale == plan.scale and grid.translate == plan.translate
    assert slide_grid(image).shape == (512, 768)


def test_resample_labels_between_grids():
    fine = np.arange(40 * 40, dtype=np.uint32).reshape(40, 40)  # scale 1, translate 0
    # the same grid: a plain crop
    got = resample_labels(fine, (1, 1), (0, 0), Region(5, 6, 9, 12), (1, 1), (0, 0))
    np.testing.assert_array_equal(got, fine[5:9, 6:12])
    # a 2x coarser grid whose pixel centres sit on fine pixels 0.5 + 2i -> nearest 1 + 2i
    got = resample_labels(fine, (1, 1), (0, 0), Region(0, 0, 3, 3), (2, 2), (0.5, 0.5))
    np.testing.assert_array_equal(got, fine[1:7:2, 1:7:2])
    # off the array: zeros
    got = resample_labels(fine, (1, 1), (0, 0), Region(18, 18, 22, 22), (2, 2), (0.5, 0.5))
    assert got[-1, -1] == 0 and got[0, 0] == fine[37, 37]
