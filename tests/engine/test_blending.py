"""Blending weights."""

from __future__ import annotations

import numpy as np
import pytest

from napari_neuroseg.engine.blending import MIN_WEIGHT, blend_weights
from napari_neuroseg.engine.errors import EngineError


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
@pytest.mark.parametrize("shape", [(16, 16), (9, 20)])
def test_tapered_weights_peak_in_centre_and_are_symmetric(blend, shape):
    w = blend_weights(shape, blend)
    assert w.shape == shape and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0)
    assert w.min() >= MIN_WEIGHT
    np.testing.assert_allclose(w, w[::-1, ::-1])
    cy, cx = (shape[0] - 1) // 2, (shape[1] - 1) // 2
    assert w[cy, cx] == w.max()
    assert w[0, 0] < 0.5 * w[cy, cx]
    # monotone from the centre to the edge along each axis
    assert (np.diff(w[cy, : cx + 1]) >= 0).all()


def test_linear_profile_is_a_tent():
    w = blend_weights((1, 6), "linear")[0]
    np.testing.assert_allclose(w, np.array([1, 2, 3, 3, 2, 1]) / 3, rtol=1e-6)


def test_gaussian_profile_uses_sigma_of_an_eighth_and_is_floored():
    w = blend_weights((1, 257), "gaussian")[0]
    sigma = 257 / 8
    assert w[80] == pytest.approx(np.exp(-0.5 * (48 / sigma) ** 2), rel=1e-5)
    # the edge is 4 sigma out (exp(-8) = 3.4e-4), below the floor
    assert w[0] == pytest.approx(MIN_WEIGHT)


@pytest.mark.parametrize("blend", ["constant", "none"])
def test_flat_weights(blend):
    assert (blend_weights((5, 7), blend) == 1).all()


def test_unknown_blend_mode():
    with pytest.raises(EngineError, match="unknown blend mode 'cosine'"):
        blend_weights((4, 4), "cosine")
