"""Tests for napari_neuroseg.models.lenet (the LeNet nuclei-tile recipe's LeNet-5 tile
classifier)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_neuroseg.models.lenet import CLASSES, LeNet5, lenet_feature_size


def test_classes_order():
    assert CLASSES == ("NO_NUCLEUS", "NUCLEI")


def test_parameter_count_matches_seed_layout():
    # conv1  3*6*5*5 + 6        =        456
    # conv2  6*16*5*5 + 16      =      2,416
    # conv3  16*120*5*5 + 120   =     48,120
    # fc1    120*58*58*84 + 84  = 33,909,204   (120*58*58 = 403,680 inputs)
    # fc2    84*2 + 2           =        170
    # total                     = 33,960,366
    model = LeNet5()
    assert sum(p.numel() for p in model.parameters()) == 33_960_366
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 6, (5, 5), (2, 2)), (6, 16, (5, 5), (0, 0)), (16, 120, (5, 5), (0, 0))
    ]  # fmt: skip
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.features) == 2
    fc1, dropout = model.classifier[1], model.classifier[3]
    assert (fc1.in_features, fc1.out_features) == (403_680, 84)
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.5


def test_forward_shapes_at_256():
    model = LeNet5().eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert model.features(x).shape == (2, 120, 58, 58)
        out = model(x)
    assert out.shape == (2, 2) and out.dtype == torch.float32


@pytest.mark.parametrize(("size", "side"), [(256, 58), (64, 10), (32, 2), (28, 1)])
def test_feature_size(size, side):
    assert lenet_feature_size(size) == side
    with torch.no_grad():
        assert LeNet5(input_size=size).features(torch.zeros(1, 3, size, size)).shape[-1] == side


def test_errors():
    with pytest.raises(ValueError, match="too small"):
        LeNet5(input_size=27)
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        LeNet5(input_size=64)(torch.zeros(1, 3, 256, 256))


def test_learns_bright_versus_dark_tiles():
    torch.manual_seed(0)
    model = LeNet5(input_size=32, dropout=0.0)
    x = torch.cat([torch.rand(8, 3, 32, 32) * 0.3, 0.7 + torch.rand(8, 3, 32, 32) * 0.3])
    y = torch.cat([torch.zeros(8), torch.ones(8)]).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(20):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
