"""Tests for napari_neuroseg.io._geometry (slice order, spacing, tilt, resampling)."""

import math

import numpy as np
import pytest

from napari_neuroseg.io._geometry import (
    blend_slices,
    describe_spacing,
    is_uniform,
    orientation_label,
    plan_resample,
    shift_slice,
    slice_normal,
    spacing_runs,
    stack_geometry,
    tilt_angle_deg,
)

AXIAL = (1, 0, 0, 0, 1, 0)


def tilted(deg: float) -> tuple[float, ...]:
    t = math.radians(deg)
    return (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))


def test_normal_is_row_cross_column():
    assert np.allclose(slice_normal(AXIAL), [0, 0, 1])
    assert np.allclose(slice_normal((0, 1, 0, 0, 0, -1)), [-1, 0, 0])
    t = math.radians(18.5)
    assert np.allclose(slice_normal(tilted(18.5)), [0, math.sin(t), math.cos(t)])
    # not-quite-unit cosines (as stored with few digits) are normalised
    assert np.isclose(np.linalg.norm(slice_normal((2, 0, 0, 0, 0.5, 0))), 1.0)


@pytest.mark.parametrize(
    "orientation, label",
    [
        (AXIAL, "axial"),
        (tilted(18.5), "axial"),
        ((0, 1, 0, 0, 0, -1), "sagittal"),
        ((1, 0, 0, 0, 0, -1), "coronal"),
        (tilted(45), "oblique"),
    ],
)
def test_orientation_label(orientation, label):
    assert orientation_label(orientation) == label


@pytest.mark.parametrize(
    "bad", [(1, 0, 0, 0, 1), (0, 0, 0, 0, 1, 0), (1, 0, 0, 1, 0, 0), (1, 0, 0, 0, float("nan"), 0)]
)
def test_bad_orientation_raises(bad):
    with pytest.raises(ValueError):
        slice_normal(bad)


def test_stack_sorted_by_position_not_input_order():
    z = [10.0, -5.0, 0.0, 5.0]
    geometry = stack_geometry([(3.0, 4.0, v) for v in z], AXIAL)
    assert geometry.order == (1, 2, 3, 0)
    assert geometry.positions_mm == (-5.0, 0.0, 5.0, 10.0)
    assert geometry.spacings_mm == [5.0, 5.0, 5.0]
    assert geometry.uniform and not geometry.tilted
    assert geometry.origin_mm == (-5.0, 4.0, 3.0)
    assert all(offset == (0.0, 0.0) for offset in geometry.offsets_mm)


def test_sorting_follows_the_normal_direction():
    # sagittal: normal is -x, so the slice with the largest x comes first
    geometry = stack_geometry([(x, 0, 0) for x in (1.0, 3.0, 2.0)], (0, 1, 0, 0, 0, -1))
    assert geometry.order == (1, 2, 0)
    assert geometry.positions_mm == (-3.0, -2.0, -1.0)


def test_gantry_tilt_geometry():
    t = 18.5
    table = np.array([0.0, 4.2, 8.4, 12.6])
    positions = [(-125.0, -120.0, z) for z in table]
    geometry = stack_geometry(positions, tilted(t))
    assert geometry.tilt_deg == pytest.approx(t, abs=1e-6)
    assert geometry.tilted
    assert geometry.spacings_mm == pytest.approx([4.2 * math.cos(math.radians(t))] * 3)
    # IPP moving along z shifts each slice by -z*sin(t) along the column direction
    assert [o[0] for o in geometry.offsets_mm] == pytest.approx(-table * math.sin(math.radians(t)))
    assert [o[1] for o in geometry.offsets_mm] == pytest.approx([0.0] * 4)


def test_tilt_angle_of_single_slice_is_zero():
    assert tilt_angle_deg((1, 2, 3), (1, 2, 3), np.array([0.0, 0.0, 1.0])) == 0.0


def test_uniform_and_runs():
    assert is_uniform([5.0, 5.0, 5.02])
    assert not is_uniform([5.0, 5.0, 5.2])
    assert is_uniform([]) and is_uniform([3.0])
    runs = spacing_runs([4.0] * 13 + [1.08] + [7.0] * 13)
    assert [(round(g, 2), a, b) for g, a, b in runs] == [
        (4.0, 1, 14),
        (1.08, 14, 15),
        (7.0, 15, 28),
    ]
    assert describe_spacing([4.0] * 13 + [1.08] + [7.0] * 13) == (
        "4.00 mm (slices 1-14), 1.08 mm (slices 14-15), 7.00 mm (slices 15-28)"
    )
    assert describe_spacing([1, 2, 3, 4, 5, 6], max_runs=2).endswith("... (4 more)")


def test_plan_uniform_untilted_is_identity():
    geometry = stack_geometry([(0, 0, 2.0 * k) for k in range(5)], AXIAL)
    plan = plan_resample(geometry, (0.5, 0.5), (16, 20))
    assert plan.spacing_mm == 2.0
    assert plan.shape == (16, 20)
    assert [b.sources for b in plan.blends] == [(k,) for k in range(5)]
    assert all(s == (0.0, 0.0) for s in plan.shifts_px)
    assert plan.origin_mm == (0.0, 0.0, 0.0)


def test_plan_uneven_spacing_interpolates():
    geometry = stack_geometry([(0, 0, z) for z in (0.0, 2.0, 4.0, 10.0)], AXIAL)
    plan = plan_resample(geometry, (1.0, 1.0), (4, 4))
    assert plan.spacing_mm == 2.0  # the median gap
    assert len(plan.blends) == 6  # 0, 2, ..., 10
    assert (plan.blends[3].lower, plan.blends[3].upper) == (2, 3)
    assert plan.blends[3].weight == pytest.approx(1 / 3)
    assert plan.blends[5].sources == (3,)
    finer = plan_resample(geometry, (1.0, 1.0), (4, 4), spacing=0.5)
    assert len(finer.blends) == 21


def test_plan_tilted_grows_grid_and_shifts():
    t = math.radians(20)
    table = np.arange(4) * 5.0
    geometry = stack_geometry([(0.0, 0.0, z) for z in table], tilted(20))
    plan = plan_resample(geometry, (0.5, 0.5), (10, 12))
    total_px = table[-1] * math.sin(t) / 0.5
    assert plan.shape == (10 + math.ceil(total_px), 12)
    rows = [s[0] for s in plan.shifts_px]
    # the first slice is furthest along +c, so it is shifted most into the grid
    assert rows == pytest.approx(table * math.sin(t) / 0.5 - total_px)
    assert plan.origin_mm[1] == pytest.approx(geometry.origin_mm[1] - total_px * 0.5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_plan_rejects_bad_spacing(bad):
    geometry = stack_geometry([(0, 0, 0), (0, 0, 1)], AXIAL)
    with pytest.raises(ValueError, match="positive"):
        plan_resample(geometry, (1.0, 1.0), (4, 4), spacing=bad)


def test_plan_single_slice():
    geometry = stack_geometry([(0, 0, 7.0)], AXIAL)
    plan = plan_resample(geometry, (1.0, 1.0), (4, 4), spacing=3.0)
    assert [b.sources for b in plan.blends] == [(0,)]


def test_shift_slice_is_bilinear_with_fill():
    ramp = np.tile(np.arange(6, dtype=np.float32), (4, 1))
    out = shift_slice(ramp, (0.0, 0.5), (4, 6), fill=-1.0)
    assert np.allclose(out[:, :5], np.arange(5) + 0.5)
    assert np.all(out[:, 5] == -1.0)
    grown = shift_slice(ramp, (-2.0, 0.0), (8, 6), fill=-7.0)
    assert np.all(grown[:2] == -7.0) and np.all(grown[6:] == -7.0)
    assert np.array_equal(grown[2:6], ramp)


def test_blend_slices_linear_along_normal():
    geometry = stack_geometry([(0, 0, 0.0), (0, 0, 4.0)], AXIAL)
    plan = plan_resample(geometry, (1.0, 1.0), (3, 3), spacing=1.0)
    a, b = np.zeros((3, 3)), np.full((3, 3), 8.0)
    assert np.allclose(blend_slices(plan, 1, [a, b], fill=0), 2.0)
    assert np.allclose(blend_slices(plan, 4, [b], fill=0), 8.0)
    with pytest.raises(ValueError, match="needs 2"):
        blend_slices(plan, 1, [a], fill=0)
