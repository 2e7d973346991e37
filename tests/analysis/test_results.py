"""Tests for napari_neuroseg.analysis.results: region results, nuclei counts and densities."""

import numpy as np
import pytest

from napari_neuroseg.analysis.results import UNTYPED, NucleiResult, nuclei_density
from napari_neuroseg.engine import Region, TileCounts


def nuclei(labels, unit="µm", **types):
    h, w = labels.shape
    return NucleiResult(labels, (0.5, 0.5), (0.0, 0.0), Region(0, 0, 2 * h, 2 * w),
                        Region(0, 0, h, w), 0.5, unit, TileCounts(), **types)


def test_density_formula():
    assert nuclei_density(50, 0.25) == 200.0
    assert nuclei_density(3, 0.0) == 0.0


def test_area_in_mm2_follows_the_slide_unit():
    labels = np.zeros((2000, 1000), np.int32)
    assert nuclei(labels).area_mm2 == pytest.approx(0.5)  # 1 mm x 0.5 mm at 0.5 µm/px
    assert nuclei(labels, unit="mm").area_mm2 == pytest.approx(0.5e6)


def test_counts_and_type_counts_add_up():
    labels = np.zeros((2000, 1000), np.int32)
    labels[0, :3] = [1, 2, 3]
    result = nuclei(labels, types={1: 1, 2: 1, 3: 0}, type_names=("background", "tumour", "other"))
    assert result.count == 3
    assert result.density == pytest.approx(6.0)
    assert result.type_counts == {"tumour": 2, "other": 0, UNTYPED: 1}
    assert result.type_density == {"tumour": 4.0, "other": 0.0, UNTYPED: 2.0}
    assert nuclei(labels).type_counts == {}
