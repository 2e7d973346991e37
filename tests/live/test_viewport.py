"""The visible box from camera numbers, and its pixels in an array of any scale."""

import pytest

from napari_neuroseg.engine import Region
from napari_neuroseg.live import Box, box_to_pixels, visible_box


def test_visible_box_is_the_canvas_divided_by_the_zoom():
    box = visible_box((0.0, 500.0, 1000.0), zoom=2.0, canvas_size=(400, 800))
    assert box == Box(400.0, 800.0, 600.0, 1200.0)
    assert box.center == (500.0, 1000.0)
    grown = visible_box((500.0, 1000.0), zoom=2.0, canvas_size=(400, 800), margin=0.25)
    assert grown == Box(350.0, 700.0, 650.0, 1300.0)


def test_visible_box_refuses_a_zero_zoom():
    with pytest.raises(ValueError, match="zoom"):
        visible_box((0, 0), zoom=0.0, canvas_size=(10, 10))


def test_box_to_pixels_follows_scale_and_translate_and_clips():
    # pixel i covers [i - 0.5, i + 0.5) * scale + translate
    region = box_to_pixels(Box(9.5, 19.5, 29.5, 59.5), scale=(0.5, 0.5), translate=(0, 0),
                           shape=(1000, 1000, 3))
    assert region == Region(19, 39, 60, 120)
    clipped = box_to_pixels(Box(-100, -100, 10, 10), (1.0, 1.0), (5.0, 5.0), (100, 100))
    assert clipped == Region(0, 0, 6, 6)
    assert box_to_pixels(Box(-100, -100, -50, -50), (1, 1), (0, 0), (10, 10)) is None


def test_box_to_pixels_uses_the_last_two_axes_of_a_volume():
    region = box_to_pixels(Box(0, 0, 10, 20), scale=(4.0, 2.0, 2.0), translate=(0, 0, 0),
                           shape=(30, 100, 100))
    assert region == Region(0, 0, 6, 11)
