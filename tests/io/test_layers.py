"""The layer codec: LazyImage -> napari layer data -> layer -> LazyImage again.

Each round trip runs through a duck-typed stand-in layer (what the codec promises to need)
and through real napari layers of a Qt-free ``ViewerModel``.
"""

import dataclasses

import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import (
    channel_layers,
    image_from_layer,
    image_layers,
    image_modality,
    layer_kwargs,
    stack_from_layers,
    to_layer_data,
)

from .conftest import lazy_slide


def _ct() -> LazyImage:
    volume = da.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8).rechunk((1, 8, 8))
    return LazyImage([volume], "zyx", (4.0, 0.5, 0.5), "mm", "ct", "CT", "/x/ct",
                     translate=(1.0, 2.0, 3.0), metadata={"series_uid": "1.2.3"},
                     display={"colormap": "gray"})


def _lgg(pid: str = "TCGA_CS_4941") -> LazyImage:
    """A Kaggle LGG patient as the reader returns it: three channels split by napari."""
    stack = da.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    channels = ["pre-contrast", "FLAIR", "post-contrast"]
    return LazyImage([stack], "zyxc", (1.0, 0.5, 0.5), "mm", pid, "MR", f"/lgg/{pid}",
                     metadata={"patient_id": pid, "channels": channels},
                     display={"channel_axis": 3, "name": [f"{pid} {c}" for c in channels]})


class Image:
    """A stand-in image layer: the napari attributes the codec reads, set the way napari sets
    them (the class name is what tells an image layer from others)."""

    def __init__(self, data, name="", scale=None, translate=None, metadata=None, rgb=False,
                 multiscale=False, **_display):
        self.data, self.name, self.rgb, self.multiscale = data, name, rgb, multiscale
        level = data[0] if multiscale else data
        self.ndim = level.ndim - (1 if rgb else 0)
        self.scale = np.asarray(scale if scale is not None else [1.0] * self.ndim)
        self.translate = np.asarray(translate if translate is not None else [0.0] * self.ndim)
        self.metadata = metadata or {}


def _napari_layers(images):
    """The layers napari makes of ``images`` (no Qt: a bare ``ViewerModel``)."""
    from napari.components import ViewerModel

    viewer = ViewerModel()
    for data, kwargs, kind in to_layer_data(images):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer.layers


def _same(image: LazyImage, back: LazyImage) -> None:
    """``back`` is ``image`` again: the same arrays and every field but ``display``."""
    assert len(back.levels) == len(image.levels)
    for ours, theirs in zip(image.levels, back.levels, strict=True):
        assert isinstance(theirs, da.Array)
        np.testing.assert_array_equal(theirs.compute(), ours.compute())
    for field in dataclasses.fields(LazyImage):
        if field.name not in ("levels", "display"):
            assert getattr(back, field.name) == getattr(image, field.name), field.name


# --- LazyImage -> layer data ------------------------------------------------------------


def test_slide_layer_data_is_multiscale_with_physical_scale():
    image = lazy_slide()
    assert image.downsamples() == [1.0, 2.0]
    ((data, kwargs, kind),) = to_layer_data([image])
    assert kind == "image" and isinstance(data, list) and len(data) == 2
    assert kwargs["multiscale"] is True and kwargs["rgb"] is True
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["units"] == ("um", "um")
    meta = kwargs["metadata"]["neuroseg"]
    assert meta["unit"] == "um" and meta["vendor"] == "aperio"
    assert meta["warnings"] == ["MPP unknown"]


def test_volume_layer_data_is_single_array():
    vol = LazyImage([da.zeros((3, 8, 8), np.int16)], "zyx", (4.0, 0.5, 0.5), "mm", "ct", "CT", "d",
                    translate=(1.0, 2.0, 3.0))
    ((data, kwargs, _),) = to_layer_data([vol])
    assert isinstance(data, da.Array) and "multiscale" not in kwargs
    assert kwargs["translate"] == (1.0, 2.0, 3.0)


def test_channel_image_needs_rgb_or_channel_axis():
    img = LazyImage([da.zeros((2, 8, 8, 3), np.uint8)], "zyxc", (1, 1, 1), "mm", "m", "MR", "f")
    with pytest.raises(ValueError, match="channel_axis"):
        layer_kwargs(img)
    img.display = {"channel_axis": 3}
    assert layer_kwargs(img)["channel_axis"] == 3


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lazy_slide, _ct])
def test_round_trip_through_a_stand_in_layer(make):
    image = make()
    if image.translate is None:  # napari's default: no offset
        image.translate = (0.0,) * len(image.scale)
    ((data, kwargs, kind),) = to_layer_data([image])
    assert kind == "image"
    layer = Image(data, **kwargs)
    back = image_from_layer(layer)
    _same(image, back)
    assert all(b is a for a, b in zip(image.levels, back.levels, strict=True))  # not copied
    assert image_modality(layer) == image.modality


@pytest.mark.parametrize("make", [lazy_slide, _ct])
def test_round_trip_through_a_napari_layer(make):
    image = make()
    image.translate = image.translate or (0.0,) * len(image.scale)
    (layer,) = _napari_layers([image])
    _same(image, image_from_layer(layer))
    assert image_modality(layer) == image.modality


def test_split_channels_stack_back_into_the_readers_stack():
    image = _lgg()
    ((data, kwargs, _),) = to_layer_data([image])
    names, axis = kwargs.pop("name"), kwargs.pop("channel_axis")
    stand_ins = [Image(np.take(data, i, axis=axis), name=n, **kwargs)
                 for i, n in enumerate(names)][::-1]  # any order in the layer list
    for layers in (stand_ins, list(_napari_layers([image, _lgg("TCGA_other")]))):
        flair = next(layer for layer in layers if layer.name == f"{image.name} FLAIR")
        group = channel_layers(layers, flair)
        assert [layer.name for layer in group] == names
        stack = stack_from_layers(group)
        assert stack.axes == "zyxc" and stack.name == image.name and stack.modality == "MR"
        assert stack.scale == image.scale and stack.unit == "mm"
        assert stack.source == image.source and stack.metadata["channels"] == names
        np.testing.assert_array_equal(stack.levels[0].compute(), image.levels[0].compute())
        one = image_from_layer(flair)  # one channel alone is a zyx volume of the stack
        assert one.axes == "zyx" and one.modality == "MR"


def test_layers_not_opened_by_the_plugin_are_described_from_their_data():
    from napari.components import ViewerModel

    viewer = ViewerModel()
    rgb = viewer.add_image(np.zeros((40, 30, 3), np.uint8), name="he", rgb=True)
    grey = viewer.add_image(np.zeros((5, 40, 30), np.float32), name="vol", scale=(2, 1, 1))
    viewer.add_labels(np.zeros((40, 30), np.uint8), name="mask")
    slide, volume = image_from_layer(rgb), image_from_layer(grey)
    assert (slide.axes, slide.modality, slide.unit, slide.source) == ("yxc", "slide", "um", "he")
    assert (volume.axes, volume.modality, volume.unit) == ("zyx", "MR", "mm")
    assert volume.scale == (2.0, 1.0, 1.0) and volume.translate == (0.0, 0.0, 0.0)
    assert image_layers(viewer.layers) == [rgb, grey]
    assert image_layers(viewer.layers, ("MR",)) == [grey]


def test_layer_data_without_dask_gets_tile_sized_chunks(tmp_path):
    """Plain arrays get 512-pixel chunks (not dask's 128 MB "auto"), zarr keeps its own."""
    import dask.array as da
    import numpy as np
    import zarr

    from napari_neuroseg.io.layers import LAYER_CHUNK, lazy_level

    rgb = lazy_level(np.zeros((3000, 2000, 3), np.uint8), rgb=True)
    assert rgb.chunksize == (LAYER_CHUNK, LAYER_CHUNK, 3)
    volume = lazy_level(np.zeros((4, 600, 700), np.int16), rgb=False)
    assert volume.chunksize == (1, LAYER_CHUNK, LAYER_CHUNK)
    stored = zarr.create_array(str(tmp_path / "a.zarr"), shape=(1000, 1000), chunks=(250, 125),
                               dtype="uint8")
    assert lazy_level(stored, rgb=False).chunksize == (250, 125)
    already = da.zeros((100, 100), chunks=10)
    assert lazy_level(already, rgb=False) is already
