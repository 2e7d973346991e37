"""Pixel-grid polygons: exact boundary tracing, and filling back to the same mask."""

import numpy as np

from napari_neuroseg.annotate.pixel_polygons import fill_polygon, mask_polygons


def test_a_square_with_a_hole_gives_its_exact_corners():
    mask = np.zeros((8, 8), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    (polygon,) = mask_polygons(mask)
    outer, hole = polygon
    assert sorted(map(tuple, outer)) == [(1, 1), (1, 6), (6, 1), (6, 6)]
    assert sorted(map(tuple, hole)) == [(3, 3), (3, 4), (4, 3), (4, 4)]

    def area(ring):
        x, y = ring[:, 0], ring[:, 1]
        return np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) / 2

    assert area(outer) == 25 and area(hole) == -1  # right-hand rule: holes run backwards


def test_diagonal_pixels_are_separate_pieces():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = mask[2, 2] = True
    assert len(mask_polygons(mask)) == 2


def test_trace_then_fill_gives_the_mask_back():
    mask = np.zeros((12, 14), bool)
    mask[2:10, 3:12] = True
    mask[4:6, 5:8] = False  # a hole
    (polygon,) = mask_polygons(mask)
    rings = [ring.tolist() for ring in polygon]
    box, filled = fill_polygon(mask.shape, rings, (0, 0), 1.0)
    out = np.zeros_like(mask)
    out[box] = filled
    np.testing.assert_array_equal(out, mask)


def test_fill_outside_the_grid_is_none():
    assert fill_polygon((8, 8), [[(20, 20), (30, 20), (30, 30), (20, 30)]], (0, 0), 1.0) is None
