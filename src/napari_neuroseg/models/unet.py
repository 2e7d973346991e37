"""U-Net with configurable depth, width and convolutions per floor.

Two presets reproduce the U-Nets of the FLAIR MRI recipe (docs/training-recipes.md),
``UNet.five_floor`` and ``UNet.four_floor``. The same class is the 8-class GBM
network inside :class:`~napari_neuroseg.models.tissue.TissueSegmenter`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from napari_neuroseg.models._blocks import ConvBlock, UpBlock, check_input


def _per_floor(
    counts: Sequence[int] | None, default: int, length: int, what: str
) -> tuple[int, ...]:
    if counts is None:
        return (default,) * length
    counts = tuple(int(c) for c in counts)
    if len(counts) != length or min(counts) < 1:
        raise ValueError(f"{what} needs {length} positive convolution counts, got {counts}")
    return counts


class UNet(nn.Module):
    """U-Net: an encoder of ``depth`` floors, a mirrored decoder with skip connections.

    Floor ``i`` (1 = full resolution) has ``base_features * 2**(i-1)`` channels; floor
    ``depth`` is the bottleneck. Each floor is a stack of 3x3 convolutions (+ batch norm +
    ReLU); the encoder goes down with 2x2 max pooling, the decoder up with 2x2 transposed
    convolutions whose output is concatenated with the encoder floor of the same size. A 1x1
    convolution gives ``out_channels`` logits at the input resolution.

    Modules are named ``enc1`` ... ``enc{depth-1}``, ``bottleneck``, ``dec{depth-1}`` ...
    ``dec1``, ``head`` (see :meth:`layer_groups`).

    Parameters
    ----------
    in_channels : int
        Input channels (3 for RGB or three MRI sequences, 1 for FLAIR alone).
    out_channels : int
        Output logit channels (1 for a binary mask, K for K classes).
    depth : int
        Number of floors, bottleneck included (at least 2). Height and width of the input
        must be divisible by ``2**(depth-1)`` (see :attr:`size_multiple`).
    base_features : int
        Channels of the first floor; doubled on every floor down.
    convs_per_block : int
        Convolutions per floor where ``deep_convs`` / ``decoder_convs`` do not say otherwise.
    deep_convs : sequence of int, optional
        Convolutions of each encoder floor, shallow to deep, bottleneck last (``depth``
        numbers), e.g. ``(2, 2, 3, 3)`` for triple convolutions on the two deep floors.
    decoder_convs : sequence of int, optional
        Convolutions of each decoder floor, shallow to deep (``depth - 1`` numbers).
    batch_norm : bool
        Batch norm after every 3x3 convolution.
    dropout : float
        ``Dropout2d`` probability at the end of every floor (0 = none).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        depth: int = 5,
        base_features: int = 32,
        convs_per_block: int = 2,
        deep_convs: Sequence[int] | None = None,
        batch_norm: bool = True,
        dropout: float = 0.0,
        decoder_convs: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"UNet needs depth >= 2 (encoder floors + bottleneck), got {depth}")
        if base_features < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"UNet needs positive channel counts, got in_channels={in_channels}, "
                f"out_channels={out_channels}, base_features={base_features}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.encoder_convs = _per_floor(deep_convs, convs_per_block, depth, "deep_convs")
        self.decoder_convs = _per_floor(decoder_convs, convs_per_block, depth - 1, "decoder_convs")
        widths = [base_features * 2**i for i in range(depth)]
        norm_drop = {"batch_norm": batch_norm, "dropout": dropout}

        channels = in_channels
        for floor in range(1, depth):
            width, n_convs = widths[floor - 1], self.encoder_convs[floor - 1]
            self.add_module(f"enc{floor}", ConvBlock(channels, width, n_convs, **norm_drop))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(channels, widths[-1], self.encoder_convs[-1], **norm_drop)
        for floor in range(depth - 1, 0, -1):
            width = widths[floor - 1]
            up = UpBlock(widths[floor], width, width, self.decoder_convs[floor - 1], **norm_drop)
            self.add_module(f"dec{floor}", up)
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2**(depth-1)``)."""
        return 2 ** (self.depth - 1)

    @classmethod
    def five_floor(cls, in_channels: int = 3, out_channels: int = 1) -> UNet:
        """The FLAIR MRI recipe's model 1: 5 floors (32 ... 512 channels), two convolutions per
        floor.

        This is the U-Net of Buda et al. (2019) that the FLAIR MRI recipe replicates in Keras
        (7,774,049 parameters there, counting the batch-norm moving statistics). Here:
        7,765,985 parameters (bias + batch-norm scale/shift; running statistics are buffers).
        Input sides must be multiples of 16.
        """
        return cls(in_channels, out_channels, depth=5, base_features=32, convs_per_block=2)

    @classmethod
    def four_floor(cls, in_channels: int = 3, out_channels: int = 1) -> UNet:
        """The FLAIR MRI recipe's model 2: 4 floors (64 ... 512 channels), triple convolutions deep
        down.

        The two deepest encoder floors (256 channels and the 512-channel bottleneck) stack
        three convolutions, the other floors and the decoder two. 10,654,401 parameters
        against the write-up's 10,655,809 trainable ones (0.01 % apart; the write-up does not
        publish the layer list, this is the simplest design that lands there). Input sides must be
        multiples of 8.
        """
        return cls(in_channels, out_channels, depth=4, base_features=64, deep_convs=(2, 2, 3, 3))

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Floors in forward order: ``enc1`` ... ``bottleneck``, ``dec{depth-1}`` ... ``head``.

        Returns
        -------
        list of (str, torch.nn.Module)
            Names are attribute paths (``model.get_submodule(name)`` finds them).
        """
        names = [f"enc{i}" for i in range(1, self.depth)] + ["bottleneck"]
        names += [f"dec{i}" for i in range(self.depth - 1, 0, -1)] + ["head"]
        return [(name, self.get_submodule(name)) for name in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_channels, H, W)`` for a float32 batch ``(N, in_channels, H, W)``."""
        check_input(x, self.in_channels, self.size_multiple, f"UNet(depth={self.depth})")
        skips = []
        for floor in range(1, self.depth):
            x = getattr(self, f"enc{floor}")(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for floor in range(self.depth - 1, 0, -1):
            x = getattr(self, f"dec{floor}")(x, skips[floor - 1])
        return self.head(x)
