"""FC-DenseNet ("One Hundred Layers Tiramisu"), laid out as the GBM_WSSM network defines it.

The 8-class glioblastoma region model that the LGG tissue recipe (docs/training-recipes.md)
transfers from (GBM_WSSM, Keras) is an FC-DenseNet103: a 3x3 convolution of 48 filters; dense
blocks of 4, 5, 7, 10 and 12 layers on the way down, each followed by a transition down; a
bottleneck block of 15 layers; on the way up, a transition up and a dense block of 12, 10, 7, 5 and
4 layers; a 1x1 convolution to the classes. With 3 input channels and 8 classes it has 9,321,320
trainable parameters, and 9,424,392 counting the batch norms' running means and variances as Keras
does (its "Total params", the write-up's 9.4 M).

What this layout keeps from the authors' code, because a converted ``GBM_WSSM.h5`` must compute
the same thing here (see :mod:`napari_neuroseg.models.keras_import`):

- every dense layer is ReLU, *then* batch norm, then a 3x3 convolution with ``growth_rate``
  filters and dropout (the reverse of the usual BN -> ReLU);
- a transition down is ReLU, batch norm, a 1x1 convolution with as many filters as it has
  input channels and **stride 2** (no pooling), then dropout;
- a transition up is a 3x3 transposed convolution (stride 2) over the feature maps that the
  previous dense block *added*, not its input; its output, cropped to twice the input size,
  matches TensorFlow's ``padding="same"``;
- every convolution has a bias; batch norm uses Keras' epsilon (1e-3) and momentum (0.99,
  i.e. 0.01 in PyTorch's convention); dropout is element-wise, as Keras' ``Dropout``.

Modules are registered in forward order, so ``named_modules()`` and the parameterised layers
follow the data: the Keras import and progressive unfreezing both rely on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: The authors' FC-DenseNet103 (GBM_WSSM): layers per dense block on the way down.
FCDENSENET103_DOWN = (4, 5, 7, 10, 12)
#: Layers of the FC-DenseNet103 bottleneck block.
FCDENSENET103_BOTTLENECK = 15
#: Keras' batch-norm epsilon and momentum (PyTorch convention: 1 - 0.99).
KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01


def _relu_bn(channels: int) -> list[nn.Module]:
    return [nn.ReLU(), nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)]


def _dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


class DenseLayer(nn.Sequential):
    """ReLU -> batch norm -> 3x3 convolution (``growth_rate`` filters) -> dropout."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__(*_relu_bn(in_channels),
                         nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1),
                         *_dropout(dropout))


class DenseBlock(nn.Module):
    """``n_layers`` dense layers, each fed the concatenation of the input and all before it.

    Parameters
    ----------
    in_channels, n_layers, growth_rate : int
    dropout : float
    """

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int,
                 dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, dropout)
            for i in range(n_layers))
        self.in_channels = in_channels
        self.added_channels = n_layers * growth_rate

    @property
    def out_channels(self) -> int:
        """Channels of the block's full output (input plus added maps)."""
        return self.in_channels + self.added_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input with the new maps concatenated, and the new maps alone."""
        added = []
        for layer in self.layers:
            new = layer(x)
            x = torch.cat([x, new], dim=1)
            added.append(new)
        return x, torch.cat(added, dim=1)


class TransitionDown(nn.Sequential):
    """ReLU -> batch norm -> 1x1 convolution with stride 2 (same channels) -> dropout."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__(*_relu_bn(channels),
                         nn.Conv2d(channels, channels, kernel_size=1, stride=2),
                         *_dropout(dropout))


class TransitionUp(nn.Module):
    """3x3 transposed convolution, stride 2, cropped as TensorFlow's ``padding="same"``.

    TensorFlow places input pixel ``i`` at output ``2 i`` plus the kernel offset and keeps the
    first ``2 H`` rows; an unpadded ``ConvTranspose2d`` gives ``2 H + 1`` rows aligned the same
    way, so the last row and column are dropped.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Twice the height and width of ``x``."""
        h, w = x.shape[-2:]
        return self.conv(x)[..., : 2 * h, : 2 * w]


class DownStage(nn.Module):
    """A dense block, then a transition down; the block's full output is the skip."""

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int,
                 dropout: float) -> None:
        super().__init__()
        self.block = DenseBlock(in_channels, n_layers, growth_rate, dropout)
        self.transition = TransitionDown(self.block.out_channels, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The downsampled output and the skip."""
        skip, _ = self.block(x)
        return self.transition(skip), skip


class UpStage(nn.Module):
    """A transition up of the previous block's added maps, the skip concatenated, a dense
    block."""

    def __init__(self, added_channels: int, skip_channels: int, n_layers: int,
                 growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.transition = TransitionUp(added_channels)
        self.block = DenseBlock(added_channels + skip_channels, n_layers, growth_rate, dropout)

    def forward(self, added: torch.Tensor, skip: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's full output and its added maps."""
        return self.block(torch.cat([self.transition(added), skip], dim=1))


class FCDenseNet(nn.Module):
    """Fully convolutional DenseNet for semantic segmentation (logits, no softmax).

    Parameters
    ----------
    in_channels : int
        Image channels (3 for RGB).
    n_classes : int
        Output classes.
    first_filters : int
        Filters of the first 3x3 convolution (48 in FC-DenseNet103).
    growth_rate : int
        Filters of every dense layer (16).
    down_blocks : sequence of int
        Layers of each dense block on the way down (4, 5, 7, 10, 12); the way up mirrors it.
    bottleneck_layers : int
        Layers of the bottleneck dense block (15).
    dropout : float
        Dropout after every dense layer and transition down (0.2).

    Notes
    -----
    Inputs must have sides that are multiples of :attr:`size_multiple` (``2**len(down_blocks)``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 8,
        first_filters: int = 48,
        growth_rate: int = 16,
        down_blocks: Sequence[int] = FCDENSENET103_DOWN,
        bottleneck_layers: int = FCDENSENET103_BOTTLENECK,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        down_blocks = tuple(int(n) for n in down_blocks)
        if not down_blocks or min(down_blocks) < 1 or bottleneck_layers < 1 or growth_rate < 1:
            raise ValueError(f"FCDenseNet needs at least one down block and positive layer "
                             f"counts (got down_blocks={down_blocks}, bottleneck_layers="
                             f"{bottleneck_layers}, growth_rate={growth_rate})")
        self.down_blocks, self.n_classes = down_blocks, n_classes
        self.first = nn.Conv2d(in_channels, first_filters, kernel_size=3, padding=1)
        channels, skips = first_filters, []
        self.down = nn.ModuleList()
        for n in down_blocks:
            stage = DownStage(channels, n, growth_rate, dropout)
            channels = stage.block.out_channels
            skips.append(channels)
            self.down.append(stage)
        self.bottleneck = DenseBlock(channels, bottleneck_layers, growth_rate, dropout)
        added = self.bottleneck.added_channels
        self.up = nn.ModuleList()
        for n, skip in zip(reversed(down_blocks), reversed(skips), strict=True):
            stage = UpStage(added, skip, n, growth_rate, dropout)
            self.up.append(stage)
            added, channels = stage.block.added_channels, stage.block.out_channels
        self.head = nn.Conv2d(channels, n_classes, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** len(self.down_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, n_classes, H, W)``."""
        x = self.first(x)
        skips = []
        for stage in self.down:
            x, skip = stage(x)
            skips.append(skip)
        _, added = self.bottleneck(x)
        for stage, skip in zip(self.up, reversed(skips), strict=True):
            x, added = stage(added, skip)
        return self.head(x)

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Named stages in forward order: ``first``, ``down.0`` ..., ``bottleneck``,
        ``up.0`` ..., ``head``."""
        return [("first", self.first), *((f"down.{i}", m) for i, m in enumerate(self.down)),
                ("bottleneck", self.bottleneck),
                *((f"up.{i}", m) for i, m in enumerate(self.up)), ("head", self.head)]
