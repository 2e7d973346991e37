import pytest
import torch
from torch import nn

from napari_neuroseg.models._blocks import count_parameters
from napari_neuroseg.models.unet import UNet


def _small(**kwargs) -> UNet:
    torch.manual_seed(0)
    return UNet(**{"depth": 3, "base_features": 4, **kwargs})


def _n_convs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def test_five_floor_matches_the_write_up_parameter_count():
    model = UNet.five_floor()
    n = count_parameters(model)
    # the FLAIR MRI recipe (Keras, batch-norm moving statistics included): 7,774,049
    assert 7_600_000 < n < 8_000_000
    assert n == 7_765_985
    # Keras counts the 2 moving statistics per batch-norm channel as (non-trainable) params
    bn_buffers = sum(
        m.running_mean.numel() * 2 for m in model.modules() if hasattr(m, "running_mean")
    )
    assert abs(n + bn_buffers - 7_774_049) / 7_774_049 < 0.001


def test_four_floor_has_triple_convs_on_deep_encoder_floors():
    model = UNet.four_floor()
    n = count_parameters(model)
    # the FLAIR MRI recipe's model 2, its trainable parameters
    assert abs(n - 10_655_809) / 10_655_809 < 0.001
    assert n == 10_654_401
    assert [_n_convs(model.get_submodule(f"enc{i}")) for i in (1, 2, 3)] == [2, 2, 3]
    assert _n_convs(model.bottleneck) == 3
    assert [_n_convs(model.get_submodule(f"dec{i}").convs) for i in (1, 2, 3)] == [2, 2, 2]
    assert model.bottleneck[0].out_channels == 512


def test_five_floor_output_is_logits_at_input_size():
    model = UNet.five_floor(in_channels=1, out_channels=2).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([-5.0, 5.0]))  # a sigmoid/softmax would squash these
        out = model(torch.rand(1, 1, 64, 64))
    assert out.shape == (1, 2, 64, 64)
    assert out.dtype == torch.float32
    assert out[:, 0].max() < 0 and out[:, 1].min() > 1  # raw logits at the input size


@pytest.mark.parametrize(("depth", "size"), [(2, (6, 10)), (3, (32, 48)), (4, (40, 16))])
def test_any_size_divisible_by_the_multiple_works(depth, size):
    model = _small(depth=depth, out_channels=3).eval()
    assert model.size_multiple == 2 ** (depth - 1)
    assert model(torch.rand(2, 3, *size)).shape == (2, 3, *size)


def test_indivisible_size_names_the_multiple_and_a_fix():
    model = UNet.five_floor()
    with pytest.raises(ValueError, match=r"divisible by 16, got 70x64.*64x64"):
        model(torch.rand(1, 3, 70, 64))


def test_wrong_channels_and_rank_are_explained():
    model = _small()
    with pytest.raises(ValueError, match="3 input channel"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="NCHW"):
        model(torch.rand(3, 16, 16))


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 1}, {"deep_convs": (2, 2)}, {"deep_convs": (2, 0, 2)}, {"decoder_convs": (2,)}],
)
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        UNet(**{"depth": 3, "base_features": 4, **kwargs})


def test_layer_groups_are_in_forward_order():
    model = _small(depth=4).eval()
    groups = model.layer_groups()
    assert [name for name, _ in groups] == [
        "enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1", "head",
    ]  # fmt: skip
    called = []
    for name, module in groups:
        module.register_forward_hook(lambda *_, name=name: called.append(name))
    model(torch.rand(1, 3, 16, 16))
    assert called == [name for name, _ in groups]


def test_backward_reaches_every_parameter_and_changes_nothing():
    model = _small(dropout=0.1)
    x = torch.rand(2, 3, 16, 16)
    x_before = x.clone()
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model(x).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert torch.equal(x, x_before)
    for key, param in model.named_parameters():
        assert torch.equal(param, params_before[key]), key


def test_eval_is_deterministic_and_dropout_only_acts_in_training():
    model = _small(dropout=0.5)
    x = torch.rand(1, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_output_is_local_far_pixels_do_not_interact():
    # a 2-floor U-Net sees ~20 px: changing one corner must leave the opposite corner alone
    model = _small(depth=2).eval()
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., 0, 0] += 1.0
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.equal(a[..., 0, 0], b[..., 0, 0])
    assert torch.equal(a[..., 32:, 32:], b[..., 32:, 32:])


@pytest.mark.gpu
def test_cuda_forward_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = UNet.five_floor().eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        got = model.to("cuda")(x.to("cuda")).cpu()
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-3)
