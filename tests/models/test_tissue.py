import pytest
import torch
from torch import nn

from napari_neuroseg.models._blocks import count_parameters
from napari_neuroseg.models.tissue import TissueSegmenter

#: A narrow, shallow FC-DenseNet (size multiple 4) that runs in milliseconds on a CPU.
SMALL = {"first_filters": 8, "growth_rate": 4, "down_blocks": (2, 2), "bottleneck_layers": 2}


def _small(seed: int = 0, **kwargs) -> TissueSegmenter:
    torch.manual_seed(seed)
    return TissueSegmenter(**{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def default_model() -> TissueSegmenter:
    torch.manual_seed(0)
    return TissueSegmenter()


def test_default_size_is_the_seed_9_4m(default_model):
    n = count_parameters(default_model)
    assert 9_000_000 < n < 9_800_000  # the LGG tissue recipe: "all 9.4M parameters trainable"
    assert n == 9_321_532  # FC-DenseNet103 + the 212-parameter mapping head
    assert count_parameters(default_model.gbm) == 9_321_320
    assert default_model.size_multiple == 32


def test_mapping_head_is_8_to_16_relu_to_4(default_model):
    convs = [m for m in default_model.mapping if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (8, 16, (1, 1)),
        (16, 4, (1, 1)),
    ]
    assert isinstance(default_model.mapping[1], nn.ReLU)
    assert count_parameters(default_model.mapping) == 8 * 16 + 16 + 16 * 4 + 4


def test_default_forward_gives_four_class_logits(default_model):
    default_model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = default_model(x)
        mapped = default_model.mapping(default_model.source_logits(x))
    assert out.shape == (1, 4, 64, 64)
    assert torch.equal(out, mapped)


def test_without_mapping_head_it_is_the_bare_8_class_model():
    model = _small(mapping_head=False).eval()
    assert model.mapping is None
    assert model.out_channels == 8
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model.gbm(x))
    assert model(x).shape == (2, 8, 16, 16)
    assert [name for name, _ in model.layer_groups()][-1] == "gbm.head"


@pytest.mark.parametrize("prefixed", [True, False])
def test_8_class_weights_transfer_unchanged(prefixed):
    source = _small(seed=1, mapping_head=False).eval()
    target = _small(seed=2).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(target.source_logits(x), source(x))
        weights = source.state_dict() if prefixed else source.gbm.state_dict()
        target.load_source_state_dict(weights)
        assert torch.equal(target.source_logits(x), source(x))
    assert target(x).shape == (1, 4, 16, 16)


def test_source_weights_that_do_not_fit_are_explained():
    target = _small()
    with pytest.raises(ValueError, match=r"5 classes.*n_source_classes=8"):
        target.load_source_state_dict(_small(n_source_classes=5, mapping_head=False).state_dict())
    with pytest.raises(ValueError, match="mapping head"):
        target.load_source_state_dict(_small().state_dict())
    with pytest.raises(ValueError, match="do not fit"):
        target.load_source_state_dict(_small(down_blocks=(2, 3), mapping_head=False).state_dict())


def test_replace_head_keeps_the_gbm_network():
    model = _small()
    model.set_trainable(0)
    gbm_before = {k: v.clone() for k, v in model.gbm.state_dict().items()}
    model.replace_head(6)
    assert model.out_channels == 6
    assert model.mapping[-1].out_channels == 6
    for key, value in model.gbm.state_dict().items():
        assert torch.equal(value, gbm_before[key]), key
    assert not any(p.requires_grad for p in model.gbm.parameters())
    assert all(p.requires_grad for p in model.mapping.parameters())
    assert model.eval()(torch.rand(1, 3, 16, 16)).shape == (1, 6, 16, 16)


def test_replace_head_adds_a_head_to_a_bare_model():
    model = _small(mapping_head=False)
    model.replace_head(4)
    assert model.out_channels == 4
    assert [name for name, _ in model.layer_groups()][-1] == "mapping"


def test_layer_groups_and_trainable_layers_are_in_forward_order():
    model = _small().eval()
    groups = model.layer_groups()
    assert [name for name, _ in groups] == [
        "gbm.first", "gbm.down.0", "gbm.down.1", "gbm.bottleneck",
        "gbm.up.0", "gbm.up.1", "gbm.head", "mapping",
    ]  # fmt: skip
    for name, module in groups:
        assert model.get_submodule(name) is module
    layers = model.trainable_layers()
    called = []
    for name, module in layers:
        assert next(module.parameters(recurse=False), None) is not None, name
        module.register_forward_hook(lambda *_, name=name: called.append(name))
    model(torch.rand(1, 3, 16, 16))
    assert called == [name for name, _ in layers]
    assert sum(count_parameters(m) for _, m in layers) == count_parameters(model)


def test_default_model_has_201_parameterised_layers(default_model):
    layers = default_model.trainable_layers()
    names = [name for name, _ in layers]
    # first conv; 38 dense layers down, 38 up and 15 in the bottleneck (batch norm + conv
    # each); 5 transitions down (batch norm + conv); 5 transposed convs; head; 2 mapping convs
    assert len(names) == 1 + 2 * (38 + 38 + 15) + 2 * 5 + 5 + 1 + 2 == 201
    kinds = [type(m) for _, m in layers]
    assert (kinds.count(nn.Conv2d), kinds.count(nn.BatchNorm2d)) == (100, 96)
    assert kinds.count(nn.ConvTranspose2d) == 5
    assert names[0] == "gbm.first"
    assert names[-3:] == ["gbm.head", "mapping.0", "mapping.2"]


def test_progressive_unfreezing_counts_increase(default_model):
    counts = [default_model.set_trainable(n) for n in (0, 10, 25, 50, None)]
    assert counts[0] == 212  # mapping head only
    # last 10: gbm.head (256 * 8 + 8), the last up stage's transposed conv (80 -> 80, 3x3)
    # and its 4 dense layers (batch norm + conv from 192, 208, 224, 240 channels)
    assert counts[1] == 212 + 2_056 + 57_680 + 2 * 864 + 864 * 16 * 9 + 4 * 16 == 186_156
    assert (counts[2], counts[3]) == (705_740, 2_067_116)
    assert counts[0] < counts[1] < counts[2] < counts[3] < counts[4]
    assert counts[4] == count_parameters(default_model)
    # 199 layers before the mapping head: the LGG tissue recipe's "last 50" leaves most of the
    # FC-DenseNet frozen; only the last phase (None) trains all of it
    assert default_model.set_trainable(199) == counts[4]
    first = default_model.gbm.first
    assert default_model.set_trainable(198) == counts[4] - count_parameters(first)
    assert not first.weight.requires_grad
    default_model.set_trainable(None)


def test_set_trainable_unfreezes_exactly_the_last_n_layers():
    model = _small()
    total = model.set_trainable(3)
    layers = model.trainable_layers()
    flags = [all(p.requires_grad for p in m.parameters(recurse=False)) for _, m in layers]
    assert flags == [False] * (len(layers) - 5) + [True] * 5  # 3 layers + 2 mapping convs
    assert total == sum(count_parameters(m) for _, m in layers[-5:])
    with pytest.raises(ValueError, match="last_n"):
        model.set_trainable(-1)


def test_frozen_layers_get_no_gradient_and_frozen_norms_keep_statistics():
    model = _small()
    model.set_trainable(4)
    model.train()
    frozen_bn = model.gbm.down[0].block.layers[0][1]  # ReLU, batch norm, conv, dropout
    live_bn = model.gbm.up[1].block.layers[1][1]  # among the last 4 before the head
    assert isinstance(frozen_bn, nn.BatchNorm2d) and isinstance(live_bn, nn.BatchNorm2d)
    assert not frozen_bn.training and live_bn.training
    stats_before = frozen_bn.running_mean.clone()
    model(torch.rand(2, 3, 16, 16)).logsumexp(dim=1).mean().backward()
    assert torch.equal(frozen_bn.running_mean, stats_before)
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    model.set_trainable(None)
    assert frozen_bn.training


def test_eval_is_deterministic():
    model = _small().eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
