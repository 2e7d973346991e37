"""Convolution blocks shared by the U-Net family (U-Net, TransUNet, the tissue segmenter).

Private module: the public classes live in :mod:`~napari_neuroseg.models.unet`,
:mod:`~napari_neuroseg.models.transunet` and :mod:`~napari_neuroseg.models.tissue`.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """``n_convs`` x (3x3 convolution, optional batch norm, ReLU), then optional dropout.

    Padding keeps the spatial size. Layers are registered in forward order, so
    ``named_modules()`` lists them as the data passes through them.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels into the first convolution and out of every convolution.
    n_convs : int
        Number of convolutions (at least 1).
    batch_norm : bool
        Batch norm after each convolution.
    dropout : float
        ``Dropout2d`` probability at the end of the block; 0 adds no layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_convs: int = 2,
        *,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        if n_convs < 1:
            raise ValueError(f"a conv block needs at least one convolution, got n_convs={n_convs}")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(n_convs):
            layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            channels = out_channels
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UpBlock(nn.Module):
    """Decoder floor: 2x2 transposed convolution (stride 2), concatenate the skip, conv block.

    Parameters
    ----------
    in_channels : int
        Channels of the deeper feature map (upsampled to ``out_channels``).
    skip_channels : int
        Channels of the encoder feature map concatenated after upsampling.
    out_channels : int
        Channels out of the block.
    n_convs, batch_norm, dropout
        As in :class:`ConvBlock`.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        n_convs: int = 2,
        *,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.convs = ConvBlock(
            out_channels + skip_channels,
            out_channels,
            n_convs,
            batch_norm=batch_norm,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` 2x, concatenate ``skip`` on channels, convolve."""
        return self.convs(torch.cat([self.up(x), skip], dim=1))


def check_input(x: torch.Tensor, channels: int, multiple: int, owner: str) -> None:
    """Raise a ``ValueError`` that says how to fix an input the network cannot take.

    Parameters
    ----------
    x : torch.Tensor
        The network input.
    channels : int
        Channels the network was built for.
    multiple : int
        Height and width must be divisible by this.
    owner : str
        Name of the network, for the message.
    """
    if x.ndim != 4:
        raise ValueError(f"{owner} takes NCHW input, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{owner} was built for {channels} input channel(s), got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        fixed = [max(multiple, round(s / multiple) * multiple) for s in (height, width)]
        raise ValueError(
            f"{owner} needs height and width divisible by {multiple}, got {height}x{width}; "
            f"pad or crop to e.g. {fixed[0]}x{fixed[1]}"
        )


def parameterised_leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Every sub-module that owns parameters itself (conv, norm, linear...), in registration order.

    Parameters
    ----------
    module : torch.nn.Module
        Root module.
    prefix : str
        Prepended (with a dot) to each name.

    Returns
    -------
    list of (str, torch.nn.Module)
        Qualified names and modules. For the networks of this package, registration order is
        forward order.
    """
    found = []
    for name, sub in module.named_modules():
        if next(sub.parameters(recurse=False), None) is not None:
            found.append((f"{prefix}.{name}" if prefix and name else prefix or name, sub))
    return found


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values in ``module`` (buffers such as running means excluded).

    Parameters
    ----------
    module : torch.nn.Module
        Any module.
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
