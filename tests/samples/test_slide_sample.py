"""Tests for napari_neuroseg.samples.slide: synthetic H&E pyramids."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from napari_neuroseg.samples import slide as sample_slide
from napari_neuroseg.samples._slide_texture import he_region
from napari_neuroseg.samples.slide import make_sample_slide, write_synthetic_slide


def _levels(path) -> list[tifffile.TiffPage]:
    with tifffile.TiffFile(path) as tif:
        return [level.keyframe for level in tif.series[0].levels]


def test_pages_layout_is_a_tiled_pyramid_openslide_reads(tmp_path):
    path = write_synthetic_slide(tmp_path / "s.tif", size=(1000, 1300), tile=128, mpp=0.5)
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert [p.shape for p in pages] == [(1000, 1300, 3), (500, 650, 3)]
        assert [p.subfiletype for p in pages] == [0, 1]
        assert all(p.is_tiled and (p.tilelength, p.tilewidth) == (128, 128) for p in pages)
        assert pages[0].compression == tifffile.COMPRESSION.JPEG
        assert pages[0].resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert pages[0].tags["XResolution"].value == (20000, 1)  # 0.5 um/px
        assert pages[1].tags["XResolution"].value == (10000, 1)
    s = openslide.OpenSlide(str(path))
    assert s.level_dimensions == ((1300, 1000), (650, 500))
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)


def test_subifd_and_ome_layouts(tmp_path):
    subifd = write_synthetic_slide(
        tmp_path / "sub.tif", size=(600, 600), layout="subifd", levels=3, compression="zlib"
    )
    with tifffile.TiffFile(subifd) as tif:
        assert len(tif.pages) == 1 and len(tif.pages.first.subifds) == 2
    assert [p.shape[:2] for p in _levels(subifd)] == [(600, 600), (300, 300), (150, 150)]
    ome = write_synthetic_slide(
        tmp_path / "x.ome.tif", size=(600, 600), layout="ome", levels=2, mpp=0.25
    )
    with tifffile.TiffFile(ome) as tif:
        assert tif.is_ome and len(tif.series[0].levels) == 2
        assert 'PhysicalSizeX="0.25"' in tif.ome_metadata


def test_level_count_default_and_explicit(tmp_path):
    default = write_synthetic_slide(tmp_path / "a.tif", size=(2100, 300), compression=None)
    assert [p.shape[:2] for p in _levels(default)] == [(2100, 300), (1050, 150), (525, 75)]
    single = write_synthetic_slide(tmp_path / "b.tif", size=(300, 300), levels=1)
    assert len(_levels(single)) == 1


def test_no_mpp_writes_no_resolution(tmp_path):
    path = write_synthetic_slide(tmp_path / "n.tif", size=(256, 256), mpp=None, levels=1)
    with tifffile.TiffFile(path) as tif:
        assert "XResolution" not in tif.pages.first.tags or (
            tif.pages.first.resolutionunit == tifffile.RESUNIT.NONE
        )


def test_content_is_he_like_with_background(tmp_path):
    path = write_synthetic_slide(
        tmp_path / "he.tif", size=(1024, 1024), levels=2, compression="zlib", seed=3
    )
    with tifffile.TiffFile(path) as tif:
        rgb = tif.pages.first.asarray().reshape(-1, 3).astype(int)
    r, g, b = rgb.T
    white = (r > 225) & (g > 225) & (b > 225)
    pink = (r > 200) & (g < r - 40) & (b > g)  # eosin stroma
    purple = (r < 140) & (b > r) & (b > g)  # hematoxylin nuclei
    assert 0.1 < white.mean() < 0.6  # background around the tissue and holes
    assert pink.mean() > 0.2
    assert 0.02 < purple.mean() < 0.4


def test_same_seed_same_pixels_other_seed_differs(tmp_path):
    one = write_synthetic_slide(tmp_path / "1.tif", size=(300, 300), levels=1, seed=5)
    two = write_synthetic_slide(tmp_path / "2.tif", size=(300, 300), levels=1, seed=5)
    three = write_synthetic_slide(tmp_path / "3.tif", size=(300, 300), levels=1, seed=6)
    first, second, third = (tifffile.imread(p) for p in (one, two, three))
    np.testing.assert_array_equal(first, second)
    assert np.abs(first.astype(int) - third).mean() > 5


def test_tiles_join_seamlessly():
    whole = he_region(100, 200, 64, 128, seed=1)
    left = he_region(100, 200, 64, 64, seed=1)
    right = he_region(100, 264, 64, 64, seed=1)
    np.testing.assert_array_equal(whole, np.concatenate([left, right], axis=1))


def test_lower_levels_show_the_same_tissue():
    full = he_region(0, 0, 512, 512, size=(512, 512)).astype(float)
    half = he_region(0, 0, 256, 256, downsample=2, size=(512, 512)).astype(float)
    reduced = full.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(reduced - half).mean() < 12


def test_fast_mode_repeats_encoded_tiles(tmp_path):
    path = write_synthetic_slide(tmp_path / "fast.tif", size=(2100, 1900), fast=True)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.shape == (2100, 1900, 3)
        assert len(set(page.databytecounts)) <= sample_slide.FAST_VARIANTS + 1
        tile = page.asarray()[922:1178, 822:1078]
    assert tile.std() > 10  # tissue tiles near the centre, not blank
    assert openslide.OpenSlide(str(path)).level_count == len(_levels(path))


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sample_slide, "he_region", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_slide(tmp_path / "x.tif", size=(256, 256))
    assert list(tmp_path.iterdir()) == []


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="tile"):
        write_synthetic_slide(tmp_path / "x.tif", size=(64, 64), tile=100)
    with pytest.raises(ValueError, match="layout"):
        write_synthetic_slide(tmp_path / "x.tif", size=(64, 64), layout="zarr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compression"):
        write_synthetic_slide(tmp_path / "x.tif", size=(64, 64), compression="lzma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        write_synthetic_slide(tmp_path / "x.tif", size=(0, 64))


def test_make_sample_slide_writes_once_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setattr(sample_slide, "SAMPLE_SLIDE_SIZE", (512, 768))
    path = make_sample_slide(tmp_path / "samples")
    assert path.name == sample_slide.SAMPLE_SLIDE_NAME
    assert _levels(path)[0].shape == (512, 768, 3)
    stamp = path.stat().st_mtime_ns
    assert make_sample_slide(tmp_path / "samples") == path
    assert path.stat().st_mtime_ns == stamp
    path.write_bytes(b"broken")  # an unreadable leftover is rewritten
    make_sample_slide(tmp_path / "samples")
    assert _levels(path)[0].shape == (512, 768, 3)
