"""CycleGAN networks (Zhu et al. 2017) for stain translation, e.g. IHC -> H&E (the CycleGAN +
HoVer-Net recipe, docs/training-recipes.md).

:class:`ResnetGenerator` is the image-to-image generator (c7s1-64, d128, d256, residual
blocks, u128, u64, c7s1-3, tanh); :class:`PatchDiscriminator` the 70x70 PatchGAN. Weights
start from N(0, 0.02) as in the paper's code, so two networks built after the same
``torch.manual_seed`` are identical.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NormKind = Literal["instance", "batch", "none"]
_NORMS = ("instance", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _check_norm(kind: str, owner: str) -> None:
    if kind not in _NORMS:
        raise ValueError(f"{owner}: unknown norm {kind!r} (one of {_NORMS})")


def _init_gan_weights(module: nn.Module) -> None:
    """Convolution weights ~ N(0, 0.02), biases 0; batch-norm scale ~ N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


class ResidualBlock(nn.Module):
    """``x + [pad, conv3x3, norm, ReLU, pad, conv3x3, norm](x)`` with reflection padding.

    Parameters
    ----------
    channels : int
        Channels in and out.
    norm : {"instance", "batch", "none"}
        Normalisation after each convolution.
    dropout : float
        Dropout between the two convolutions (0 in the paper).
    """

    def __init__(self, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
            _norm(norm, channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape in and out."""
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: NCHW image in, NCHW image in [-1, 1] out, same size.

    c7s1-F, d2F, d4F, ``n_blocks`` residual blocks of 4F channels, u2F, uF, c7s1-out, tanh
    (F = ``base_features``). With the defaults (F = 64, 9 blocks, instance norm):
    11,378,179 parameters. Height and width must be multiples of 4.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in and out.
    base_features : int
        Channels of the first convolution.
    n_blocks : int
        Residual blocks (9 for 256x256 training crops, 6 for 128x128 in the paper).
    norm : {"instance", "batch", "none"}
        Normalisation; instance norm is the CycleGAN default.
    dropout : float
        Dropout inside the residual blocks.
    """

    size_multiple = 4

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_features: int = 64,
        n_blocks: int = 9,
        norm: NormKind = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_norm(norm, "ResnetGenerator")
        if n_blocks < 0:
            raise ValueError(f"ResnetGenerator: n_blocks must be >= 0, got {n_blocks}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        f = base_features
        bias = norm != "batch"  # batch norm has its own shift
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, f, kernel_size=7, bias=bias),
            _norm(norm, f),
            nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(f * mult, f * mult * 2, 3, stride=2, padding=1, bias=bias),
                _norm(norm, f * mult * 2),
                nn.ReLU(inplace=True),
            ]
        layers += [ResidualBlock(4 * f, norm, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(
                    f * mult, f * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                _norm(norm, f * mult // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(f, out_channels, kernel_size=7),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)
        _init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translated image ``(N, out_channels, H, W)`` in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResnetGenerator takes (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if height % 4 or width % 4 or min(height, width) < 8:
            raise ValueError(
                f"ResnetGenerator needs height and width that are multiples of 4 and at "
                f"least 8, got {height}x{width}; pad or crop the input"
            )
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: one real/fake logit per overlapping patch.

    C64 (no norm) - C128 - C256 (stride 2) - C512 (stride 1) - 1-channel convolution, 4x4
    kernels, LeakyReLU 0.2. With ``n_layers=3`` each output logit sees a 70x70 input patch;
    defaults: 2,764,737 parameters. A 256x256 input gives a 30x30 logit map.

    Parameters
    ----------
    in_channels : int
        Image channels.
    base_features : int
        Channels of the first convolution.
    n_layers : int
        Stride-2 convolutions after the first one (3 = 70x70 receptive field).
    norm : {"instance", "batch", "none"}
        Normalisation (not on the first and last convolutions).
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_features: int = 64,
        n_layers: int = 3,
        norm: NormKind = "instance",
    ) -> None:
        super().__init__()
        _check_norm(norm, "PatchDiscriminator")
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_features, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = base_features
        bias = norm != "batch"
        for i in range(1, n_layers + 1):
            out = base_features * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, kernel_size=4, stride=stride, padding=1, bias=bias),
                _norm(norm, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        _init_gan_weights(self)

    @property
    def receptive_field(self) -> int:
        """Input pixels (per side) seen by one output logit."""
        size = 1
        for layer in reversed(self.model):
            if isinstance(layer, nn.Conv2d):
                size = (size - 1) * layer.stride[0] + layer.kernel_size[0]
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits ``(N, 1, h, w)`` (real > 0 > fake after training)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchDiscriminator takes (N, {self.in_channels}, H, W) input, "
                f"got {tuple(x.shape)}"
            )
        return self.model(x)
