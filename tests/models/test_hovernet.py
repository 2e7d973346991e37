"""Tests for napari_neuroseg.models.hovernet (network and h/v targets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from napari_neuroseg.models.hovernet import HoVerNet, hv_targets
from napari_neuroseg.models.hovernet_post import hovernet_instances
from napari_neuroseg.models.instance_metrics import match_instances

TINY = {"base_features": 8, "encoder_depth": 3, "blocks_per_level": 1}


def _touching_discs(shape=(32, 32), centres=((10, 10), (10, 21), (20, 15)), radius=6):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist = np.stack([np.hypot(yy - r, xx - c) for r, c in centres])
    return np.where(dist.min(0) <= radius, dist.argmin(0) + 1, 0).astype(np.int32)


def test_default_parameter_counts():
    # measured: stem 928, encoder 2,794,112, decoders 3 x 624,512 (np, hv [, tp]), 1x1 heads
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(HoVerNet()) == 4_044_196
    assert count(HoVerNet(n_types=6)) == 4_668_906
    assert count(HoVerNet(**TINY)) == 38_412


@pytest.mark.parametrize("size", [(64, 64), (50, 37), (3, 5)])
def test_same_size_outputs(size):
    model = HoVerNet(**TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert model.branches == ("np", "hv")
    assert set(out) == {"np", "hv"}
    assert out["np"].shape == out["hv"].shape == (2, 2, *size)


def test_type_branch_and_tanh():
    model = HoVerNet(n_types=5, hv_activation="tanh", **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 40) * 100)
    assert model.branches == ("np", "hv", "tp")
    assert out["tp"].shape == (1, 5, 40, 40)
    assert out["hv"].abs().max() <= 1.0


def test_padding_does_not_leak_between_images():
    model = HoVerNet(**TINY).eval()
    x = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        both = model(x)["hv"]
        single = model(x[1:])["hv"]
    torch.testing.assert_close(both[1:], single, rtol=1e-4, atol=1e-5)


def test_constructor_and_input_errors():
    with pytest.raises(ValueError, match="encoder_depth"):
        HoVerNet(encoder_depth=1)
    with pytest.raises(ValueError, match="n_types"):
        HoVerNet(n_types=1)
    with pytest.raises(ValueError, match="hv_activation"):
        HoVerNet(hv_activation="sigmoid")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        HoVerNet(**TINY)(torch.zeros(1, 1, 16, 16))


def test_hv_targets_on_a_row_and_an_even_instance():
    labels = np.zeros((3, 12), dtype=np.int32)
    labels[1, 2:7] = 4  # 5 pixels, centre column 4
    labels[0:2, 8:12] = 9  # 2 x 4 pixels, centre (0.5, 9.5) rounds to (1, 10)
    before = labels.copy()
    hv = hv_targets(labels)
    np.testing.assert_array_equal(labels, before)
    assert hv.shape == (2, 3, 12) and hv.dtype == np.float32
    np.testing.assert_allclose(hv[0, 1, 2:7], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(hv[1, 1, 2:7], 0)
    np.testing.assert_allclose(hv[0, 0, 8:12], [-1, -0.5, 0, 1])  # offsets -2, -1, 0, 1
    np.testing.assert_allclose(hv[1, 0:2, 8], [-1, 0])  # offsets -1, 0
    assert np.all(hv[:, labels == 0] == 0)


def test_hv_targets_on_touching_discs():
    labels = _touching_discs()
    hv = hv_targets(labels)
    for index in range(1, 4):
        for channel in hv:
            values = channel[labels == index]
            assert values.min() == -1.0 and values.max() == 1.0
    # the disc centred at (20, 15) is whole: horizontal map antisymmetric about its centre
    row = hv[0, 20, 9:22]
    np.testing.assert_allclose(row, -row[::-1], atol=1e-6)
    with pytest.raises(ValueError, match="integer"):
        hv_targets(labels.astype(float))


@pytest.fixture
def one_thread():
    """Two OpenMP threads on a busy 2-core machine are several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_tiny_hovernet_learns_touching_nuclei_end_to_end():
    labels = _touching_discs()
    assert ndi.label(labels > 0)[1] == 1  # they touch: connected components see one blob
    target_hv = torch.from_numpy(hv_targets(labels))[None]
    target_np = torch.from_numpy(labels > 0).long()[None]
    generator = torch.Generator().manual_seed(0)
    image = torch.from_numpy(np.stack([(labels > 0) * 0.6 + 0.2] * 3).astype(np.float32))[None]
    image = image + 0.05 * torch.randn(image.shape, generator=generator)
    torch.manual_seed(0)
    model = HoVerNet(**TINY)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        out = model(image)
        loss = F.cross_entropy(out["np"], target_np) + F.mse_loss(out["hv"], target_hv)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        out = model.eval()(image)
    assert F.mse_loss(out["hv"], target_hv) < 0.02
    assert out["hv"].abs().max() < 1.1
    prob = torch.softmax(out["np"], dim=1)[0, 1].numpy()
    instances = hovernet_instances(prob, out["hv"][0].numpy(), ksize=7)
    true_ids, _, iou = match_instances(labels, instances)
    assert instances.max() == 3 and len(true_ids) == 3 and iou.min() > 0.8
