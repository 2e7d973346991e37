"""HoVer-Net-style nuclear instance segmentation network (Graham et al., 2019), plain torch.

One residual encoder feeds two or three decoders:

* ``"np"``: nuclear pixel branch, 2-class logits (background, nucleus);
* ``"hv"``: horizontal and vertical distance of each nuclear pixel to its nucleus' centre of
  mass, normalised to ``[-1, 1]`` per nucleus (targets from :func:`hv_targets`);
* ``"tp"`` (when ``n_types`` is given): nucleus type logits per pixel.

Differences from the paper, chosen so that the net trains on a CPU and tiles like the other
models of this package:

* the encoder is a small configurable residual net (``encoder_depth`` levels of
  ``blocks_per_level`` basic residual units, ``base_features * 2**i`` channels) instead of a
  pre-activation ResNet-50;
* the decoders are U-Net-like (nearest upsampling, skip concatenation, two 3x3 convolutions)
  instead of dense units;
* every convolution is zero-padded, so the output has the size of the input ("same"), where the
  paper's valid convolutions map 270 x 270 to 80 x 80. The engine crops a halo instead.
  Inputs whose side is not a multiple of ``2 ** (encoder_depth - 1)`` are reflect-padded and the
  outputs cropped back.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

HvActivation = Literal["linear", "tanh"]


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualUnit(nn.Module):
    """Basic residual unit: two 3x3 convolutions (the first may stride) and a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels, out_channels, stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(F(x) + shortcut(x))``."""
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class Decoder(nn.Module):
    """Upsampling path from the deepest encoder level back to full resolution."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.reduce = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for deep, shallow in zip(channels[:0:-1], channels[-2::-1], strict=True):
            self.reduce.append(nn.Conv2d(deep, shallow, 1, bias=False))
            self.fuse.append(
                nn.Sequential(_conv_bn_relu(2 * shallow, shallow), _conv_bn_relu(shallow, shallow))
            )

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decode encoder outputs ``skips`` (shallow to deep) to full-resolution features."""
        x = skips[-1]
        for reduce, fuse, skip in zip(self.reduce, self.fuse, skips[-2::-1], strict=True):
            x = F.interpolate(reduce(x), size=skip.shape[-2:], mode="nearest")
            x = fuse(torch.cat([x, skip], dim=1))
        return x


class HoVerNet(nn.Module):
    """HoVer-Net-style network with "same" output size.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for RGB).
    n_types : int or None
        Number of nucleus types (background included) for the ``"tp"`` branch; ``None`` for no
        type branch.
    base_features : int
        Channels of the first encoder level; level ``i`` has ``base_features * 2**i``.
    encoder_depth : int
        Number of encoder levels (resolution halves between levels), >= 2.
    blocks_per_level : int
        Residual units per encoder level.
    hv_activation : {"linear", "tanh"}
        Output activation of the ``"hv"`` branch; the paper's is linear (MSE + MSGE loss).

    Notes
    -----
    ``forward`` maps ``(N, in_channels, H, W)`` float32 to a dict: ``"np"`` ``(N, 2, H, W)``
    logits, ``"hv"`` ``(N, 2, H, W)`` (channel 0 horizontal, 1 vertical) and, with types,
    ``"tp"`` ``(N, n_types, H, W)`` logits.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_types: int | None = None,
        base_features: int = 32,
        encoder_depth: int = 4,
        blocks_per_level: int = 2,
        hv_activation: HvActivation = "linear",
    ) -> None:
        super().__init__()
        if encoder_depth < 2 or base_features < 1 or blocks_per_level < 1:
            raise ValueError(
                "HoVerNet needs encoder_depth >= 2, base_features >= 1 and blocks_per_level >= 1"
                f" (got {encoder_depth}, {base_features}, {blocks_per_level})"
            )
        if n_types is not None and n_types < 2:
            raise ValueError(f"HoVerNet: n_types must be >= 2 or None, got {n_types}")
        if hv_activation not in ("linear", "tanh"):
            raise ValueError(f"hv_activation must be 'linear' or 'tanh', got {hv_activation!r}")
        self.in_channels = in_channels
        self.n_types = n_types
        self.hv_activation = hv_activation
        channels = tuple(base_features * 2**i for i in range(encoder_depth))
        self.stem = _conv_bn_relu(in_channels, channels[0])
        self.encoder = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            units = [ResidualUnit(previous, width, stride=1 if level == 0 else 2)]
            units += [ResidualUnit(width, width) for _ in range(blocks_per_level - 1)]
            self.encoder.append(nn.Sequential(*units))
            previous = width
        outputs = {"np": 2, "hv": 2, **({"tp": n_types} if n_types else {})}
        self.decoders = nn.ModuleDict({name: Decoder(channels) for name in outputs})
        self.heads = nn.ModuleDict(
            {name: nn.Conv2d(channels[0], n, 1) for name, n in outputs.items()}
        )

    @property
    def branches(self) -> tuple[str, ...]:
        """Output names: ``("np", "hv")`` or ``("np", "hv", "tp")``."""
        return tuple(self.heads.keys())

    @property
    def multiple(self) -> int:
        """Input sides are padded internally to a multiple of this."""
        return 2 ** (len(self.encoder) - 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Branch outputs at the input's size (see class notes)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"HoVerNet expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        x = _pad_to_multiple(x, self.multiple)
        skips = []
        feats = self.stem(x)
        for level in self.encoder:
            feats = level(feats)
            skips.append(feats)
        out = {}
        for name, decoder in self.decoders.items():
            out[name] = self.heads[name](decoder(skips))[..., :height, :width]
        if self.hv_activation == "tanh":
            out["hv"] = torch.tanh(out["hv"])
        return out


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def hv_targets(instance_labels: np.ndarray) -> np.ndarray:
    """HoVer-Net's horizontal / vertical distance maps for an instance label image.

    For each instance, the column (horizontal) and row (vertical) offsets of its pixels from
    its centre of mass (rounded to the nearest pixel, as in the paper's code) are divided by
    the largest offset on their side, separately for negative and positive offsets, so each
    instance spans ``[-1, 1]`` along both axes.

    Parameters
    ----------
    instance_labels : numpy.ndarray of int, shape (H, W)
        0 is background, every other value one instance (need not be consecutive). Not
        modified.

    Returns
    -------
    numpy.ndarray, shape (2, H, W), float32
        Channel 0 horizontal (x), channel 1 vertical (y); 0 on the background.
    """
    labels = np.asarray(instance_labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"hv_targets expects a 2-D integer label image, got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError("hv_targets: instance labels must be >= 0")
    out = np.zeros((2, *labels.shape), dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == index
        rows, cols = np.nonzero(mask)
        centre_row = int(np.floor(rows.mean() + 0.5))
        centre_col = int(np.floor(cols.mean() + 0.5))
        out[0][box][mask] = _normalise_sides(cols - centre_col)
        out[1][box][mask] = _normalise_sides(rows - centre_row)
    return out


def _normalise_sides(offsets: np.ndarray) -> np.ndarray:
    values = offsets.astype(np.float32)
    negative, positive = values < 0, values > 0
    if negative.any():
        values[negative] /= -values[negative].min()
    if positive.any():
        values[positive] /= values[positive].max()
    return values
