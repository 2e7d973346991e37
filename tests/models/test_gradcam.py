"""Tests for napari_neuroseg.models.gradcam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_neuroseg.models.gradcam import grad_cam
from napari_neuroseg.models.resnet import ResNet50Slice

BRIGHT = (slice(4, 10), slice(4, 10))
DARK = (slice(22, 28), slice(20, 26))


class BlobNet(nn.Module):
    """Channel 0 fires on bright blobs, channel 1 on dark blobs; class k reads channel k."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            conv.weight[0].fill_(1 / 9)  # local mean
            conv.weight[1].fill_(-1 / 9)  # minus local mean
            conv.bias.fill_(-0.5)  # fires where |local mean| > 0.5
        self.features = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _blob_images() -> torch.Tensor:
    x = torch.zeros(2, 1, 32, 32)
    x[0, 0][BRIGHT] = 1.0
    x[0, 0][DARK] = -1.0
    x[1, 0][BRIGHT] = 1.0  # second image: no dark blob
    return x


def _inside(region: tuple[slice, slice], shape=(32, 32)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[region] = True
    return mask


def test_heatmap_peaks_on_the_evidence_of_each_class():
    model, x = BlobNet(), _blob_images()
    bright, dark = _inside(BRIGHT), _inside(DARK)
    cam0 = grad_cam(model, x, target_layer="features", class_index=0)
    cam1 = grad_cam(model, x, target_layer="features", class_index=1)
    assert cam0.shape == (2, 32, 32) and cam0.dtype == np.float32
    for cam, region, other in ((cam0[0], bright, dark), (cam1[0], dark, bright)):
        peak = np.unravel_index(cam.argmax(), cam.shape)
        assert region[peak]
        assert cam.max() == pytest.approx(1.0)
        assert cam[region].mean() > 0.5
        assert cam[other].max() < 0.05
        assert cam[~(region | other)].mean() < 0.05
    # no dark blob in image 1: class 1 has no positive evidence, the map is all zero
    assert np.all(cam1[1] == 0)


def test_target_layer_can_be_a_module_and_negative_class_index():
    model, x = BlobNet(), _blob_images()
    by_name = grad_cam(model, x, target_layer="features", class_index=1)
    by_module = grad_cam(model, x, target_layer=model.features, class_index=-1)
    np.testing.assert_allclose(by_name, by_module)


def test_resnet_heatmap_shape_range_and_no_side_effects():
    torch.manual_seed(0)
    model = ResNet50Slice().train()
    bn_before = model.layer4[0].bn1.running_mean.clone()
    cam = grad_cam(model, torch.randn(2, 1, 64, 64), target_layer="layer4")
    assert cam.shape == (2, 64, 64)
    assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind
    torch.testing.assert_close(model.layer4[0].bn1.running_mean, bn_before)  # ran in eval


def test_errors_name_the_problem():
    model, x = BlobNet(), _blob_images()
    with pytest.raises(ValueError, match="no layer 'layer9'"):
        grad_cam(model, x, target_layer="layer9")
    with pytest.raises(ValueError, match="class_index 2"):
        grad_cam(model, x, target_layer="features", class_index=2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        grad_cam(model, x[0], target_layer="features")
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        grad_cam(model, x, target_layer="fc")


@pytest.mark.gpu
def test_cuda_heatmap_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model, x = BlobNet(), _blob_images()
    on_cpu = grad_cam(model, x, target_layer="features", class_index=0)
    on_gpu = grad_cam(model.cuda(), x.cuda(), target_layer="features", class_index=0)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-5)
