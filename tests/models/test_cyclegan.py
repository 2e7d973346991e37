import pytest
import torch
from torch import nn

from napari_neuroseg.models._blocks import count_parameters
from napari_neuroseg.models.cyclegan import PatchDiscriminator, ResidualBlock, ResnetGenerator


def _small_generator(seed: int = 0, **kwargs) -> ResnetGenerator:
    torch.manual_seed(seed)
    return ResnetGenerator(**{"base_features": 8, "n_blocks": 2, **kwargs})


def test_standard_networks_have_the_published_sizes():
    generator = ResnetGenerator()
    discriminator = PatchDiscriminator()
    assert abs(count_parameters(generator) - 11.4e6) < 0.05e6
    assert count_parameters(generator) == 11_378_179
    assert abs(count_parameters(discriminator) - 2.8e6) < 0.05e6
    assert count_parameters(discriminator) == 2_764_737
    assert sum(isinstance(m, ResidualBlock) for m in generator.modules()) == 9
    assert discriminator.receptive_field == 70


def test_standard_generator_keeps_size_and_range():
    generator = ResnetGenerator().eval()
    with torch.no_grad():
        out = generator(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out.shape == (1, 3, 64, 64)
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("size", [(32, 48), (8, 8), (20, 36)])
def test_generator_output_size_equals_input_size(size):
    generator = _small_generator(in_channels=1, out_channels=3).eval()
    with torch.no_grad():
        assert generator(torch.rand(2, 1, *size)).shape == (2, 3, *size)


def test_generator_input_problems_are_explained():
    generator = _small_generator()
    with pytest.raises(ValueError, match=r"multiples of 4.*30x32"):
        generator(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        generator(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize(("size", "patches"), [(64, 6), (256, 30), (128, 14)])
def test_discriminator_gives_one_logit_per_patch(size, patches):
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(base_features=8).eval()
    with torch.no_grad():
        assert discriminator(torch.rand(1, 3, size, size)).shape == (1, 1, patches, patches)


def test_discriminator_logit_sees_a_70px_patch():
    # instance norm mixes the whole image, so measure locality without it; with 1 px padding
    # on each of the 5 convolutions, logit (0, 0) sees input rows/columns -23 ... 46
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(base_features=4, norm="none").eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        base = discriminator(x)[0, 0, 0, 0]
        for position, seen in ((0, True), (46, True), (47, False), (100, False)):
            y = x.clone()
            y[..., position, position] += 1.0
            assert (discriminator(y)[0, 0, 0, 0] != base) == seen, position


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_other_norms(norm):
    generator = _small_generator(norm=norm).eval()
    has_batch_norm = any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())
    assert has_batch_norm == (norm == "batch")
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert all((c.bias is None) == (norm == "batch") for c in convs[:-1])
    assert generator(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        ResnetGenerator(norm="group")
    with pytest.raises(ValueError, match="unknown norm"):
        PatchDiscriminator(norm="layer")


def test_weights_start_from_n_0_002_and_repeat_with_the_seed():
    a, b = _small_generator(seed=3), _small_generator(seed=3)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    torch.manual_seed(0)
    weight = PatchDiscriminator().model[2].weight
    assert abs(weight.std().item() - 0.02) < 0.001
    assert abs(weight.mean().item()) < 0.001


def test_backward_reaches_every_parameter_and_changes_nothing():
    generator = _small_generator()
    torch.manual_seed(1)
    discriminator = PatchDiscriminator(base_features=8)
    x = torch.rand(2, 3, 32, 32)
    x_before = x.clone()
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    discriminator(generator(x)).mean().backward()
    for net in (generator, discriminator):
        for name, param in net.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for p in generator.parameters())
    for name, param in generator.named_parameters():
        assert torch.equal(param, before[name]), name
    assert torch.equal(x, x_before)


def test_eval_is_deterministic():
    generator = _small_generator(dropout=0.5).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(generator(x), generator(x))
