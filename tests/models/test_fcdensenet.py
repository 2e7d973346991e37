"""FCDenseNet: size, output shape, forward-order registration, TensorFlow-like upsampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_neuroseg.models._blocks import count_parameters, parameterised_leaves
from napari_neuroseg.models.fcdensenet import FCDenseNet, TransitionUp

SMALL = {"in_channels": 3, "n_classes": 8, "first_filters": 8, "growth_rate": 4,
         "down_blocks": (2, 3), "bottleneck_layers": 2}


def test_fcdensenet103_has_the_keras_parameter_counts():
    model = FCDenseNet()
    running = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert count_parameters(model, trainable_only=True) == 9_321_320
    assert count_parameters(model) + running == 9_424_392  # Keras' "Total params": 9.4 M
    assert model.size_multiple == 32


def test_output_has_one_logit_map_per_class_at_the_input_size():
    model = FCDenseNet(**SMALL).eval()
    assert model.size_multiple == 4
    with torch.no_grad():
        assert model(torch.rand(2, 3, 12, 20)).shape == (2, 8, 12, 20)


def test_parameterised_layers_run_in_the_order_they_are_registered():
    model = FCDenseNet(**SMALL).eval()
    registered = parameterised_leaves(model)
    called: list[str] = []
    for name, module in registered:
        module.register_forward_hook(lambda *_, name=name: called.append(name))
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    assert called == [name for name, _ in registered]
    kinds = {type(m) for _, m in registered}
    assert kinds == {nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d}


@pytest.mark.parametrize("size", [(5, 7), (8, 8)])
def test_transition_up_doubles_height_and_width(size):
    up = TransitionUp(4)
    assert up(torch.rand(1, 4, *size)).shape == (1, 4, 2 * size[0], 2 * size[1])


def test_transition_up_places_pixel_i_at_2i_plus_the_kernel_offset():
    up = TransitionUp(1)
    with torch.no_grad():
        up.conv.bias.zero_()
        up.conv.weight.copy_(torch.arange(1.0, 10.0).reshape(1, 1, 3, 3))
        x = torch.zeros(1, 1, 3, 3)
        x[0, 0, 1, 1] = 1.0  # output rows/columns 2..4 get the kernel
        out = up(x)[0, 0]
    assert torch.equal(out[2:5, 2:5], torch.arange(1.0, 10.0).reshape(3, 3))
    assert out.sum() == 45


def test_invalid_layer_counts_are_refused():
    with pytest.raises(ValueError, match="down_blocks"):
        FCDenseNet(down_blocks=())
