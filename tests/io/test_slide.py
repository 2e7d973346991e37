"""Tests for napari_neuroseg.io.slide: lazy whole-slide reading with tifffile and openslide."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import dask
import numpy as np
import openslide
import pytest
import tifffile

from napari_neuroseg.io import _slide_openslide, _slide_tiff, slide
from napari_neuroseg.io._slide_openslide import composite_on_white
from napari_neuroseg.io._types import ReaderError
from napari_neuroseg.io.layers import to_layer_data
from napari_neuroseg.io.slide import is_slide_file, read_slide
from napari_neuroseg.samples.slide import write_synthetic_slide

SIZE = (1000, 1536)  # (height, width); 1536 = 6 tiles, 1000 leaves a partial tile row


def _page_array(path: Path, level: int = 0) -> np.ndarray:
    """Reference pixels of a level, read whole by tifffile (small files only)."""
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray()


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic slides in every layout, written once for the module."""
    folder = tmp_path_factory.mktemp("slides")
    specs = {
        "pages_zlib": {"layout": "pages", "compression": "zlib"},
        "pages_jpeg": {"layout": "pages", "compression": "jpeg"},
        "subifd_zlib": {"layout": "subifd", "compression": "zlib"},
        "ome_zlib": {"layout": "ome", "compression": "zlib", "mpp": 0.25},
        "no_mpp": {"layout": "pages", "compression": "zlib", "mpp": None, "levels": 1},
    }
    out = {}
    for name, spec in specs.items():
        suffix = ".ome.tif" if spec["layout"] == "ome" else ".tif"
        options = {"mpp": 0.5, "levels": 3, **spec}
        out[name] = write_synthetic_slide(folder / f"{name}{suffix}", size=SIZE, **options)
    return out


def test_tiled_pyramid_levels_shapes_chunks_and_scale(slides):
    image = read_slide(slides["pages_zlib"], min_level_size=2048)
    assert [lv.shape for lv in image.levels] == [(1000, 1536, 3), (500, 768, 3), (250, 384, 3)]
    assert all(lv.chunksize == (256, 256, 3) for lv in image.levels[:2])
    assert image.levels[0].chunks[0] == (256, 256, 256, 232)
    assert image.axes == "yxc" and image.unit == "um" and image.modality == "slide"
    assert image.kind == "image" and image.display == {"rgb": True}
    assert image.scale == pytest.approx((0.5, 0.5))
    assert image.name == "pages_zlib" and image.source == str(slides["pages_zlib"])
    meta = image.metadata
    assert meta["backend"] == "tifffile" and meta["format"] == "generic-tiff"
    assert meta["native_levels"] == 3 and meta["computed_levels"] == 0
    assert meta["tile_size"] == [256, 256]
    assert meta["level_shapes"] == [[1000, 1536], [500, 768], [250, 384]]
    assert meta["downsamples"] == pytest.approx([1.0, 2.0, 4.0])
    assert meta["mpp_known"] is True and meta["mpp_source"] == "TIFF XResolution/YResolution"
    assert image.warnings == []


def test_pixels_equal_what_was_written(slides):
    path = slides["pages_zlib"]
    image = read_slide(path)
    reference = _page_array(path, 0)
    np.testing.assert_array_equal(image.levels[0].compute(), reference)
    # an unaligned region spanning four tiles, including the partial bottom row
    np.testing.assert_array_equal(
        image.levels[0][700:1000, 200:530].compute(), reference[700:1000, 200:530]
    )
    np.testing.assert_array_equal(image.levels[1].compute(), _page_array(path, 1))


def test_chunks_can_be_read_from_many_threads(slides):
    path = slides["pages_jpeg"]
    image = read_slide(path)
    with dask.config.set(scheduler="threads", num_workers=8):
        pixels = image.levels[0].compute()
    np.testing.assert_array_equal(pixels, _page_array(path, 0))


@pytest.mark.parametrize("backend", ["tifffile", "openslide"])
def test_levels_survive_pickling_for_process_workers(slides, backend):
    image = read_slide(slides["pages_zlib"], backend=backend, min_level_size=100)
    for level in (image.levels[1], image.levels[-1]):  # native and computed
        restored = pickle.loads(pickle.dumps(level))
        np.testing.assert_array_equal(restored[20:60, 30:90].compute(), level[20:60, 30:90])


def test_openslide_backend_reads_the_same_pyramid(slides):
    path = slides["pages_zlib"]
    ours = read_slide(path, backend="tifffile")
    theirs = read_slide(path, backend="openslide")
    assert theirs.metadata["backend"] == "openslide"
    assert theirs.metadata["native_levels"] == 3
    assert theirs.metadata["vendor"] == "generic-tiff"
    assert theirs.scale == pytest.approx((0.5, 0.5))
    assert [lv.shape for lv in theirs.levels] == [lv.shape for lv in ours.levels]
    for level in range(3):
        np.testing.assert_array_equal(theirs.levels[level].compute(), ours.levels[level].compute())


def test_openslide_and_tifffile_agree_on_jpeg_tiles(slides):
    path = slides["pages_jpeg"]
    ours = read_slide(path).levels[0][300:700, 400:900].compute().astype(int)
    theirs = read_slide(path, backend="openslide").levels[0][300:700, 400:900].compute()
    difference = np.abs(ours - theirs)
    assert difference.max() <= 3 and difference.mean() < 0.5


def test_ome_subifd_pyramid_found_by_tifffile_not_openslide(slides):
    path = slides["ome_zlib"]
    image = read_slide(path, min_level_size=4096)
    assert image.metadata["format"] == "ome-tiff"
    assert image.metadata["native_levels"] == 3
    assert image.scale == pytest.approx((0.25, 0.25))
    assert image.metadata["mpp_source"] == "OME PhysicalSizeX/Y"
    assert image.name == "ome_zlib"
    np.testing.assert_array_equal(image.levels[2].compute(), _page_array(path, 2))
    assert openslide.OpenSlide(str(path)).level_count == 1
    fallback = read_slide(path, backend="openslide", min_level_size=4096)
    assert fallback.metadata["native_levels"] == 1


def test_generic_subifd_pyramid(slides):
    image = read_slide(slides["subifd_zlib"], min_level_size=4096)
    assert image.metadata["native_levels"] == 3
    np.testing.assert_array_equal(image.levels[1].compute(), _page_array(slides["subifd_zlib"], 1))


def test_single_level_slide_gets_lazy_2x2_mean_levels(tmp_path):
    path = write_synthetic_slide(
        tmp_path / "flat.tif", size=(520, 4200), levels=1, compression="zlib"
    )
    image = read_slide(path)  # default min_level_size=2048
    assert [lv.shape[:2] for lv in image.levels] == [(520, 4200), (260, 2100), (130, 1050)]
    assert image.metadata["native_levels"] == 1 and image.metadata["computed_levels"] == 2
    for level in image.levels:
        assert level.chunks[0][0] == min(256, level.shape[0]) and level.chunks[1][0] == 256
    full = _page_array(path).astype(np.int64)
    mean = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2] + 2) // 4
    np.testing.assert_array_equal(image.levels[1].compute(), mean)


def test_missing_mpp_warns_and_can_be_overridden(slides):
    path = slides["no_mpp"]
    with pytest.warns(UserWarning, match=r"no_mpp\.tif: the pixel size \(MPP\) is unknown"):
        image = read_slide(path)
    assert image.scale == (1.0, 1.0)
    assert image.metadata["mpp_known"] is False and image.metadata["file_mpp"] is None
    assert len(image.warnings) == 1 and "MPP" in image.warnings[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = read_slide(path, mpp=0.25)
        anisotropic = read_slide(path, mpp=(0.3, 0.2))
    assert fixed.scale == (0.25, 0.25) and fixed.warnings == []
    assert fixed.metadata["mpp_known"] is True and fixed.metadata["mpp_source"] == "user"
    assert anisotropic.scale == (0.3, 0.2)


def test_user_mpp_overrides_the_file_value(slides):
    image = read_slide(slides["pages_zlib"], mpp=0.123)
    assert image.scale == (0.123, 0.123)
    assert image.metadata["file_mpp"] == pytest.approx([0.5, 0.5])


def test_implausible_resolution_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "dpi72.tif"
    data = np.full((64, 64, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, data, tile=(32, 32), photometric="rgb", resolution=(72, 72))
    with pytest.warns(UserWarning) as record:
        image = read_slide(path)
    messages = " ".join(str(r.message) for r in record)
    assert "not a plausible slide pixel size" in messages and "MPP) is unknown" in messages
    assert image.scale == (1.0, 1.0)


def test_truncated_file_fails_at_open_naming_the_file(slides, tmp_path):
    data = slides["pages_zlib"].read_bytes()
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match=r"cut\.tif") as error:
        read_slide(path)
    assert error.value.path == str(path)
    assert "is truncated or corrupt: level 0 has image data beyond the end" in str(error.value)


def test_corrupt_tile_fails_when_read_naming_the_file(slides, tmp_path):
    source = slides["pages_zlib"]
    with tifffile.TiffFile(source) as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[7], page.databytecounts[7]
    data = bytearray(source.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    path = tmp_path / "garbled.tif"
    path.write_bytes(bytes(data))
    image = read_slide(path)  # metadata is intact
    with pytest.raises(ReaderError, match=r"garbled\.tif: cannot decode tile 7 of level 0"):
        image.levels[0][256:512, 256:512].compute()


@pytest.mark.parametrize("name", ["notes.svs", "picture.png", "data.tif"])
def test_non_slide_files_raise_reader_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all\n" * 10)
    with pytest.raises(ReaderError, match=name.replace(".", r"\.")):
        read_slide(path)


def test_grayscale_stack_is_not_a_slide(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((5, 64, 64), dtype=np.uint16))
    with pytest.raises(ReaderError, match="not an RGB slide"):
        read_slide(path)
    assert not is_slide_file(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ReaderError, match="file not found"):
        read_slide(tmp_path / "absent.svs")
    with pytest.raises(ReaderError, match="is a folder"):
        read_slide(tmp_path)


def test_argument_validation(slides):
    with pytest.raises(ValueError, match="backend"):
        read_slide(slides["pages_zlib"], backend="bioformats")
    with pytest.raises(ValueError, match="mpp"):
        read_slide(slides["pages_zlib"], mpp=-1)
    with pytest.raises(ValueError, match="min_level_size"):
        read_slide(slides["pages_zlib"], min_level_size=0)


def test_rgba_drops_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (300, 200, 4), dtype=np.uint8)
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, tile=(64, 64), photometric="rgb", extrasamples=["unassalpha"])
    image = read_slide(path, mpp=1.0)
    assert image.levels[0].shape == (300, 200, 3)
    np.testing.assert_array_equal(image.levels[0].compute(), rgba[..., :3])


def test_stripped_tiffs_use_strips_or_a_memory_map(tmp_path, monkeypatch):
    rgb = np.random.default_rng(2).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    strips = tmp_path / "strips.tif"
    tifffile.imwrite(strips, rgb, photometric="rgb", compression="zlib", rowsperstrip=64)
    image = read_slide(strips, mpp=1.0)
    assert image.levels[0].chunks[0][0] == 64 and image.levels[0].chunks[1] == (900,)
    np.testing.assert_array_equal(image.levels[0].compute(), rgb)
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, rgb, photometric="rgb")  # one uncompressed strip
    assert read_slide(raw, mpp=1.0).levels[0].chunksize == (700, 900, 3)  # small: one chunk
    monkeypatch.setattr(_slide_tiff, "MAX_STRIP_BYTES", 100_000)  # pretend the strip is huge
    image = read_slide(raw, mpp=1.0, min_level_size=300)
    assert image.levels[0].chunksize == (512, 512, 3)
    np.testing.assert_array_equal(image.levels[0][100:650, 30:870].compute(), rgb[100:650, 30:870])
    assert image.levels[1].shape == (350, 450, 3)
    with pytest.raises(ReaderError, match=r"strips\.tif: level 0 is stored in strips"):
        read_slide(strips, mpp=1.0)  # compressed strips larger than the limit: refused


def test_opening_reads_no_pixels(slides, monkeypatch):
    calls = []
    original = _slide_tiff.TiffLevelReader.read_tile

    def counting(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(_slide_tiff.TiffLevelReader, "read_tile", counting)
    image = read_slide(slides["pages_jpeg"], min_level_size=64)
    assert calls == []
    image.levels[-1].compute()
    assert calls  # the computed levels read level-2 tiles only when asked
    read_region_calls = []
    original_region = openslide.OpenSlide.read_region

    def counting_region(self, *args, **kwargs):
        read_region_calls.append(args)
        return original_region(self, *args, **kwargs)

    monkeypatch.setattr(openslide.OpenSlide, "read_region", counting_region)
    image = read_slide(slides["pages_jpeg"], backend="openslide")
    assert read_region_calls == []
    image.levels[0][:10, :10].compute()
    assert len(read_region_calls) == 1


def test_auto_falls_back_to_openslide_when_tifffile_cannot_decode(slides, monkeypatch):
    def unsupported(path):
        raise _slide_tiff.TifffileUnsupported(path, "pretend the tiles are in an odd codec")

    monkeypatch.setattr(slide, "open_with_tifffile", unsupported)
    image = read_slide(slides["pages_zlib"])
    assert image.metadata["backend"] == "openslide"
    assert image.metadata["native_levels"] == 3


def test_composite_on_white():
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    np.testing.assert_array_equal(
        composite_on_white(rgba), [[[10, 20, 30], [255, 255, 255], [127, 127, 127]]]
    )


def test_openslide_reader_composites_transparent_areas(monkeypatch, slides):
    class FakeRegion:
        def __array__(self, dtype=None, copy=None):
            return np.zeros((4, 4, 4), dtype=np.uint8)

    monkeypatch.setattr(openslide.OpenSlide, "read_region", lambda *a, **k: FakeRegion())
    image = read_slide(slides["pages_zlib"], backend="openslide")
    assert _slide_openslide.DEFAULT_TILE  # constant exists for levels without tile sizes
    assert (image.levels[0][:4, :4].compute() == 255).all()


def test_layer_data_is_multiscale_rgb(slides):
    data, kwargs, kind = to_layer_data([read_slide(slides["pages_zlib"])])[0]
    assert kind == "image" and kwargs["multiscale"] is True and kwargs["rgb"] is True
    assert kwargs["scale"] == (0.5, 0.5) and len(data) == 3


def test_is_slide_file(slides, tmp_path):
    for path in slides.values():
        assert is_slide_file(path), path
    fake_svs = tmp_path / "vendor.svs"
    fake_svs.write_bytes(b"x")
    assert is_slide_file(fake_svs)  # suffix sniff only
    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, np.zeros((64, 64, 3), dtype=np.uint8), photometric="rgb")
    assert is_slide_file(photo)  # a single stripped RGB picture: an H&E tile (issue 12)
    stack = tmp_path / "rgb_stack.tif"
    tifffile.imwrite(stack, np.zeros((4, 64, 64, 3), dtype=np.uint8), photometric="rgb")
    assert not is_slide_file(stack)  # several RGB planes: a stack, not a picture
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.zeros((64, 64), dtype=np.uint8))
    assert not is_slide_file(grey)
    stripped_pyramid = tmp_path / "stripped.ome.tiff"
    with tifffile.TiffWriter(stripped_pyramid, ome=False) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8), photometric="rgb", metadata=None)
        writer.write(np.zeros((32, 32, 3), np.uint8), photometric="rgb", subfiletype=1)
    assert is_slide_file(stripped_pyramid)  # untiled, but a reduced-resolution page follows
    png = tmp_path / "tile.png"
    png.write_bytes(b"\x89PNG\r\n")
    assert not is_slide_file(png)
    assert not is_slide_file(tmp_path / "absent.tif")
    assert not is_slide_file(tmp_path)
    assert not is_slide_file(None)  # type: ignore[arg-type]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    assert not is_slide_file(broken)


@pytest.mark.realdata
def test_real_svs_single_level_gets_computed_levels(shared_data):
    path = shared_data / "wsi" / "cmu-1-small-region.svs"
    if not path.exists():
        pytest.skip(f"{path} not found")
    image = read_slide(path)
    meta = image.metadata
    assert image.levels[0].shape == (2967, 2220, 3)
    assert [lv.shape[:2] for lv in image.levels] == [(2967, 2220), (1483, 1110)]
    assert image.scale == pytest.approx((0.499, 0.499))
    assert meta["native_levels"] == 1 and meta["computed_levels"] == 1
    assert meta["vendor"] == "aperio" and meta["format"] == "aperio-svs"
    assert meta["objective_power"] == 20.0 and meta["tile_size"] == [240, 240]
    assert meta["series"] == "Baseline" and image.warnings == []
    _assert_matches_openslide(path, image, (700, 1000))


@pytest.mark.realdata
def test_real_svs_without_mpp_warns(shared_data):
    path = shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with pytest.warns(UserWarning, match="MPP"):
        image = read_slide(path)
    assert [lv.shape[:2] for lv in image.levels] == [(3567, 4443), (1783, 2221), (891, 1110)]
    assert image.metadata["native_levels"] == 2 and image.metadata["mpp_known"] is False
    assert image.scale == (1.0, 1.0)
    _assert_matches_openslide(path, image, (1234, 2345))


def _assert_matches_openslide(path: Path, image, corner: tuple[int, int]) -> None:
    """A 256x256 tile read through the dask pyramid equals openslide's read_region."""
    y, x = corner
    ours = image.levels[0][y : y + 256, x : x + 256].compute().astype(int)
    region = openslide.OpenSlide(str(path)).read_region((x, y), 0, (256, 256))
    theirs = np.asarray(region)[..., :3]
    assert np.abs(ours - theirs).max() <= 2


# --- H&E pictures: PNG, JPEG and single RGB TIFFs (issue 12, item 4) ------------------------


def _he_pixels(shape=(600, 800)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_png_without_density_opens_as_rgb_slide_with_the_gui_hint(tmp_path):
    from PIL import Image

    path = tmp_path / "tile.png"
    pixels = _he_pixels()
    Image.fromarray(pixels).save(path)
    assert is_slide_file(path)
    with pytest.warns(UserWarning, match="MPP override") as caught:
        image = read_slide(path)
    assert image.shape == (600, 800, 3) and image.axes == "yxc" and image.unit == "um"
    assert image.display == {"rgb": True} and image.modality == "slide"
    assert image.scale == (1.0, 1.0) and image.metadata["mpp_known"] is False
    assert image.metadata["backend"] == "pillow" and image.metadata["format"] == "png"
    (warning,) = image.warnings
    assert "Open image" in warning and "read_slide(" not in warning
    assert all("read_slide(" not in str(w.message) for w in caught)
    np.testing.assert_array_equal(image.levels[0].compute(), pixels)
    np.testing.assert_array_equal(image.levels[0][100:200, 700:].compute(), pixels[100:200, 700:])
    fixed = read_slide(path, mpp=0.25)
    assert fixed.scale == (0.25, 0.25) and fixed.warnings == []


def test_jpeg_density_gives_the_mpp_and_a_72_dpi_default_is_ignored(tmp_path):
    from PIL import Image

    measured, default = tmp_path / "patch.jpg", tmp_path / "photo.jpeg"
    Image.fromarray(_he_pixels((64, 96))).save(measured, dpi=(50800, 50800))  # 0.5 um/px
    Image.fromarray(_he_pixels((64, 96))).save(default, dpi=(72, 72))
    image = read_slide(measured)
    assert image.scale == pytest.approx((0.5, 0.5)) and image.metadata["mpp_known"]
    assert image.shape == (64, 96, 3) and image.levels[0].dtype == np.uint8
    with pytest.warns(UserWarning):
        guessed = read_slide(default)
    assert guessed.scale == (1.0, 1.0) and not guessed.metadata["mpp_known"]
    assert any("72 dpi" in w for w in guessed.warnings)


def test_picture_modes_other_than_rgb_are_left_to_other_readers(tmp_path):
    from PIL import Image

    grey, rgba = tmp_path / "grey.png", tmp_path / "rgba.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(grey)
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8)).save(rgba)
    assert not is_slide_file(grey)
    assert is_slide_file(rgba)
    with pytest.warns(UserWarning):
        image = read_slide(rgba)
    assert image.shape == (8, 8, 3)  # the alpha channel is dropped
    with pytest.raises(ReaderError, match="not an RGB H&E image") as info:
        read_slide(grey)
    assert str(grey) in str(info.value)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert not is_slide_file(broken)
    with pytest.raises(ReaderError, match="not a readable PNG or JPEG"):
        read_slide(broken)


def test_picture_reader_pickles_without_its_pixels(tmp_path):
    from PIL import Image

    path = tmp_path / "tile.png"
    Image.fromarray(_he_pixels((32, 32))).save(path, dpi=(50800, 50800))
    image = read_slide(path)
    reader_image = image.levels[0].compute()
    restored = pickle.loads(pickle.dumps(image.levels[0]))
    np.testing.assert_array_equal(restored.compute(), reader_image)


def test_small_rgb_tiff_is_one_rgb_slide_in_um(tmp_path):
    from napari_neuroseg.io import detect_format, open_image

    path = tmp_path / "tile.tif"
    pixels = _he_pixels()
    tifffile.imwrite(path, pixels, photometric="rgb")
    assert detect_format(path) == "slide"
    with pytest.warns(UserWarning, match="MPP override"):
        (image,) = open_image(path)
    ((data, kwargs, kind),) = to_layer_data([image])
    assert kind == "image" and kwargs["rgb"] is True and "channel_axis" not in kwargs
    assert kwargs["units"] == ("um", "um") and data.shape == (600, 800, 3)
    np.testing.assert_array_equal(data.compute(), pixels)
    (image,) = open_image(path, mpp=0.5)
    assert image.scale == (0.5, 0.5)


@pytest.mark.realdata
def test_real_he_jpeg_and_png_tiles_open_as_slides(shared_data):
    from napari_neuroseg.io import detect_format

    jpeg = next(iter(sorted((shared_data / "gbm_tissue_ivygap" / "images").glob("*.jpg"))), None)
    png = next(iter(sorted((shared_data / "nuclei_lgg_tiles").rglob("*.png"))), None)
    if jpeg is None or png is None:
        pytest.skip("no IvyGAP JPEG or LGG nuclei PNG tile in the shared data")
    for path, size in ((jpeg, (1024, 1024)), (png, (512, 512))):
        assert detect_format(path) == "slide", path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image = read_slide(path)
        assert image.shape == (*size, 3) and image.unit == "um"
        assert image.levels[0][:16, :16].compute().shape == (16, 16, 3)
