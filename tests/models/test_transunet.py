import pytest
import torch

from napari_neuroseg.models._blocks import count_parameters
from napari_neuroseg.models.transunet import TransformerBlock, TransUNet


def _small(seed: int = 0, **kwargs) -> TransUNet:
    torch.manual_seed(seed)
    config = {
        "base_features": 4,
        "depth": 3,
        "embed_dim": 16,
        "num_heads": 2,
        "num_layers": 2,
        "img_size": 32,
    }
    return TransUNet(**{**config, **kwargs})


def test_default_parameter_count():
    model = TransUNet()
    assert count_parameters(model) == 6_006_497
    transformer = count_parameters(model.transformer)
    assert transformer == 4 * 789_760  # 4 blocks of width 256, MLP 1024
    assert model.pos_embed.shape == (1, 256, 32, 32)  # 256 px input / 8


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (16, 48)])
def test_output_is_logits_at_input_size_for_any_valid_size(size):
    model = _small(out_channels=3).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, *size)).shape == (2, 3, *size)


def test_default_model_on_a_size_other_than_img_size():
    model = TransUNet(img_size=256).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_positional_embedding_is_learned_grid_or_interpolated():
    model = _small()
    assert model.positional_embedding(8, 8) is model.pos_embed
    with torch.no_grad():
        model.pos_embed.fill_(0.25)
    resized = model.positional_embedding(4, 12)
    assert resized.shape == (1, 16, 4, 12)
    assert torch.allclose(resized, torch.full_like(resized, 0.25))
    with torch.no_grad():
        model.pos_embed.copy_(torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand_as(model.pos_embed))
    row = model.positional_embedding(8, 16)[0, 0, 0]
    assert torch.all(row[1:] >= row[:-1] - 1e-6)  # a ramp stays a ramp when upsampled
    assert row[0] < 0.05 and row[-1] > 0.95


def test_positional_embedding_changes_the_output():
    model = _small().eval()
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        before = model(x)
        model.pos_embed.zero_()
        assert not torch.allclose(model(x), before)


def test_attention_links_far_apart_pixels():
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., :8, :8] += 3.0
    for layers, far_apart_linked in ((0, False), (2, True)):
        model = _small(num_layers=layers).eval()
        with torch.no_grad():
            diff = (model(x) - model(y))[..., 48:, 48:].abs().max()
        assert (diff > 0) == far_apart_linked


def test_transformer_block_mixes_tokens_and_keeps_shape():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 2.0, 0.0).eval()
    tokens = torch.randn(2, 10, 16)
    changed = tokens.clone()
    changed[:, 0] += torch.randn(16)  # not a constant shift: LayerNorm would remove it
    with torch.no_grad():
        a, b = block(tokens), block(changed)
    assert a.shape == (2, 10, 16)
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs", [{"embed_dim": 18, "num_heads": 4}, {"img_size": 30}, {"depth": 1}]
)
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        _small(**kwargs)


def test_indivisible_input_is_explained():
    with pytest.raises(ValueError, match="divisible by 4, got 30x32"):
        _small()(torch.rand(1, 3, 30, 32))


def test_layer_groups_are_in_forward_order():
    model = _small().eval()
    groups = model.layer_groups()
    called = []
    for name, module in groups:
        if name != "transformer":  # a ModuleList is not called itself
            module.register_forward_hook(lambda *_, name=name: called.append(name))
    model.transformer[0].register_forward_hook(lambda *_: called.append("transformer"))
    model(torch.rand(1, 3, 16, 16))
    assert called == [name for name, _ in groups]


def test_backward_reaches_every_parameter_and_changes_nothing():
    model = _small()
    x = torch.rand(2, 3, 16, 16)
    x_before = x.clone()
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model(x).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
        assert torch.equal(param, params_before[name]), name
    assert torch.equal(x, x_before)


def test_eval_is_deterministic_dropout_acts_in_training():
    model = _small(dropout=0.1)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))
