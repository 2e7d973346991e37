"""Tile contributions and world geometry of the stitched result."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_neuroseg.engine.compute import TileOutput
from napari_neuroseg.engine.errors import EngineError
from napari_neuroseg.engine.stitch import contribution, stitch, world_offset
from napari_neuroseg.engine.tiling import TileGrid

GRID = TileGrid((100, 100), 32, halo=4, overlap=8)  # stride 16, window 24


def test_none_blend_writes_the_core_only():
    tile = GRID.tile(1, 2)
    values = np.arange(2 * 24 * 24, dtype=np.float32).reshape(2, 24, 24)
    out, location, weights = contribution(TileOutput(tile, values, "computed"), "none", "dense", {})
    assert location == (16, 32) and weights is None
    np.testing.assert_array_equal(out, values[:, 4:20, 4:20])


def test_blended_tile_mode_broadcasts_over_the_window_and_reuses_weights():
    tile = GRID.tile(0, 0)
    cache: dict = {}
    out, location, weights = contribution(
        TileOutput(tile, np.array([0.25, 0.75], np.float32), "cached"), "linear", "tile", cache
    )
    assert out.shape == (2, 24, 24) and (out[1] == 0.75).all()
    assert location == (-4, -4) and weights.shape == (24, 24)
    again = contribution(
        TileOutput(tile, np.zeros(2, np.float32), "computed"), "linear", "tile", cache
    )
    assert again[2] is weights


def test_stitch_counts_and_default_shape_when_nothing_computed():
    outputs = iter([TileOutput(GRID.tile(0, 0), None, "skipped")])
    values, covered, counts = stitch(
        outputs,
        3,
        shape=(10, 10),
        origin=(0, 0),
        blend="none",
        mode="dense",
        n_outputs=None,
        aggregator=None,
    )
    assert values.shape == (1, 10, 10) and not covered.any()
    assert (counts.skipped, counts.cancelled) == (1, 2)


def test_world_offset():
    assert world_offset((10.0, 20.0), (0.5, 2.0), (4, 3)) == (12.0, 26.0)
    with pytest.raises(EngineError, match="need 2 values"):
        world_offset((0.0,), (1.0, 1.0), (0, 0))


def test_engine_imports_no_gui_and_no_torch():
    code = (
        "import sys, napari_neuroseg.engine; "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'magicgui', 'torch') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
