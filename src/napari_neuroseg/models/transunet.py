"""TransUNet: a U-Net whose bottleneck is processed by transformer encoder blocks.

After Chen et al. (2021), "TransUNet: Transformers Make Strong Encoders for Medical Image
Segmentation", as built from scratch in the FLAIR MRI recipe (docs/training-recipes.md): a CNN
encoder, transformer blocks over the tokens of the bottleneck feature map (one token per pixel of
that map, learned positional embeddings), and a CNN decoder with skip connections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_neuroseg.models._blocks import ConvBlock, UpBlock, check_input


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``.

    Parameters
    ----------
    embed_dim : int
        Token width.
    num_heads : int
        Attention heads (must divide ``embed_dim``).
    mlp_ratio : float
        Hidden width of the MLP relative to ``embed_dim``.
    dropout : float
        Dropout on attention weights and after each MLP layer.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = round(embed_dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(N, L, embed_dim)`` in, same shape out."""
        normed = self.norm1(tokens)
        tokens = tokens + self.attn(normed, normed, normed, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class TransUNet(nn.Module):
    """CNN encoder, transformer over the bottleneck tokens, CNN decoder with skips.

    Floor ``i`` has ``base_features * 2**(i-1)`` channels and two 3x3 convolutions (batch
    norm, ReLU). The bottleneck map (``2**(depth-1)`` times smaller than the input) is
    projected to ``embed_dim`` by a 1x1 convolution; each pixel is a token. Positional
    embeddings are learned for ``img_size`` and bicubically interpolated for any other input
    size, so the network takes any height and width divisible by :attr:`size_multiple`.

    Modules: ``enc1`` ... ``enc{depth-1}``, ``bottleneck``, ``embed``, ``pos_embed``,
    ``transformer`` (a list of :class:`TransformerBlock`), ``norm``, ``unembed``,
    ``dec{depth-1}`` ... ``dec1``, ``head``.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels and output logit channels.
    base_features : int
        Channels of the first floor.
    depth : int
        CNN floors, bottleneck included (at least 2).
    embed_dim : int
        Token width.
    num_heads : int
        Attention heads; must divide ``embed_dim``.
    num_layers : int
        Transformer blocks.
    mlp_ratio : float
        MLP hidden width / ``embed_dim``.
    dropout : float
        Dropout in the transformer (embeddings, attention, MLP).
    img_size : int or (int, int)
        Input size the positional embeddings are learned for.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_features: int = 32,
        depth: int = 4,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_layers: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        img_size: int | tuple[int, int] = 256,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"TransUNet needs depth >= 2, got {depth}")
        if embed_dim % num_heads:
            raise ValueError(f"TransUNet: num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.img_size = _pair(img_size)
        if any(s % self.size_multiple or s <= 0 for s in self.img_size):
            raise ValueError(
                f"TransUNet: img_size {self.img_size} must be positive multiples of "
                f"{self.size_multiple} (2**(depth-1))"
            )
        grid = tuple(s // self.size_multiple for s in self.img_size)
        widths = [base_features * 2**i for i in range(depth)]

        channels = in_channels
        for floor in range(1, depth):
            self.add_module(f"enc{floor}", ConvBlock(channels, widths[floor - 1]))
            channels = widths[floor - 1]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(channels, widths[-1])
        self.embed = nn.Conv2d(widths[-1], embed_dim, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.transformer = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.unembed = ConvBlock(embed_dim, widths[-1], n_convs=1)
        for floor in range(depth - 1, 0, -1):
            width = widths[floor - 1]
            self.add_module(f"dec{floor}", UpBlock(widths[floor], width, width))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2**(depth-1)``)."""
        return 2 ** (self.depth - 1)

    def positional_embedding(self, height: int, width: int) -> torch.Tensor:
        """Positional embeddings ``(1, embed_dim, height, width)`` for a token grid.

        The learned grid is returned as is when it has this size, bicubically interpolated
        otherwise.
        """
        if tuple(self.pos_embed.shape[-2:]) == (height, width):
            return self.pos_embed
        return F.interpolate(
            self.pos_embed, size=(height, width), mode="bicubic", align_corners=False
        )

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Named stages in forward order (``enc1`` ... ``transformer`` ... ``head``)."""
        names = [f"enc{i}" for i in range(1, self.depth)] + ["bottleneck", "embed"]
        names += ["transformer", "norm", "unembed"]
        names += [f"dec{i}" for i in range(self.depth - 1, 0, -1)] + ["head"]
        return [(name, self.get_submodule(name)) for name in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_channels, H, W)`` for a float32 batch ``(N, in_channels, H, W)``."""
        check_input(x, self.in_channels, self.size_multiple, f"TransUNet(depth={self.depth})")
        skips = []
        for floor in range(1, self.depth):
            x = getattr(self, f"enc{floor}")(x)
            skips.append(x)
            x = self.pool(x)
        features = self.embed(self.bottleneck(x))
        n, dim, height, width = features.shape
        features = features + self.positional_embedding(height, width)
        tokens = self.pos_drop(features.flatten(2).transpose(1, 2))
        for block in self.transformer:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        x = self.unembed(tokens.transpose(1, 2).reshape(n, dim, height, width))
        for floor in range(self.depth - 1, 0, -1):
            x = getattr(self, f"dec{floor}")(x, skips[floor - 1])
        return self.head(x)
