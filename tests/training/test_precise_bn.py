import torch
from torch import nn

from training.precise_bn import recalibrate_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(3))


def test_running_statistics_become_the_plain_average_with_dropout_off():
    net = _net()
    batches = [(torch.randn(4, 2, 8, 8) * (k + 1) + k, None) for k in range(3)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k}
    assert recalibrate_batchnorm(net, batches, "cpu") == 3
    with torch.no_grad():  # what the norm sees: the convolution without dropout
        feats = [net[0](x) for x, _ in batches]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats])
    variances = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats])
    norm = net[2]
    assert torch.allclose(norm.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, variances.mean(0), atol=1e-4)
    assert norm.momentum == 0.1 and not net.training
    for key, value in weights.items():  # learnt weights untouched
        if "num_batches" not in key:
            assert torch.equal(net.state_dict()[key], value), key


def test_stops_after_max_batches_and_keeps_statistics_without_batches():
    net = _net()
    before = net[2].running_mean.clone()
    assert recalibrate_batchnorm(net, [], "cpu") == 0
    assert torch.equal(net[2].running_mean, before)
    batches = [(torch.randn(2, 2, 4, 4),)] * 5
    assert recalibrate_batchnorm(net, batches, "cpu", max_batches=2) == 2
    assert int(net[2].num_batches_tracked) == 2


def test_a_model_without_batch_norm_is_left_alone():
    assert recalibrate_batchnorm(nn.Conv2d(1, 1, 1), [(torch.zeros(1, 1, 2, 2),)], "cpu") == 0
