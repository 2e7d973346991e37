"""The writers' shared parts: the narrowest integer type, and pyramid halving."""

import dask.array as da
import numpy as np

from napari_neuroseg.io._write_common import (
    TILE,
    fitting_int_type,
    halve_mean,
    halve_nearest,
    halving_pyramid,
)


def test_fitting_int_type_takes_the_first_that_holds_the_range():
    allowed = ("uint8", "uint16", "int16")
    assert fitting_int_type(0, 255, allowed) == "uint8"
    assert fitting_int_type(0, 300, allowed) == "uint16"
    assert fitting_int_type(-1, 5, allowed) == "int16"
    assert fitting_int_type(-1, 70000, allowed) is None


def test_halving_pyramid_stops_when_a_plane_fits_one_tile():
    level0 = da.zeros((3, 4 * TILE + 1, TILE), np.float32, chunks=TILE)
    levels = halving_pyramid(level0, halve_mean)
    assert [lv.shape[-2:] for lv in levels][-1][0] <= TILE
    assert levels[1].shape == (3, 2 * TILE + 1, TILE // 2)  # odd rows averaged with the edge
    nearest = halving_pyramid(da.arange(16 * TILE).reshape(4 * TILE, 4), halve_nearest)
    assert nearest[1].shape == (2 * TILE, 2) and int(nearest[1][1, 1]) == 2 * 4 + 2
