"""LeNet-5 adapted to 256 x 256 RGB tiles (the LeNet nuclei-tile recipe, docs/training-recipes.md:
does a tile contain nuclei?).

Exactly the LeNet nuclei-tile recipe's network::

    Conv2d(3 -> 6, k5, p2) + ReLU, AvgPool2d(2)
    Conv2d(6 -> 16, k5) + ReLU,   AvgPool2d(2)
    Conv2d(16 -> 120, k5) + ReLU, Flatten
    Linear(120 * 58 * 58 -> 84) + ReLU + Dropout(0.5)
    Linear(84 -> 2)                                  logits for (NO_NUCLEUS, NUCLEI)

At 256 x 256 the first fully connected layer holds 33.9 M of the 34.0 M parameters, so the
net only accepts the tile size it was built for (``input_size``).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_neuroseg.dataset.tasks import TILE_CLASSES, class_names

CLASSES = class_names(TILE_CLASSES)


def lenet_feature_size(input_size: int) -> int:
    """Side of the last feature map for a square input of side ``input_size``.

    ``s`` -> conv p2: ``s`` -> pool: ``s // 2`` -> conv k5: ``- 4`` -> pool: ``// 2`` -> conv k5:
    ``- 4``; 256 gives 58.
    """
    side = (input_size // 2 - 4) // 2 - 4
    if side < 1:
        raise ValueError(f"LeNet5: input_size {input_size} is too small (needs >= 28)")
    return side


class LeNet5(nn.Module):
    """The LeNet nuclei-tile recipe's LeNet-5 tile classifier.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for RGB).
    n_classes : int
        Output classes; 2 for :data:`CLASSES` ``(NO_NUCLEUS, NUCLEI)``.
    input_size : int
        Side of the square input tile the flattened layer is sized for.
    dropout : float
        Dropout probability after the first fully connected layer.

    Notes
    -----
    ``forward`` maps ``(N, in_channels, input_size, input_size)`` float32 to ``(N, n_classes)``
    logits.
    """

    def __init__(
        self, in_channels: int = 3, n_classes: int = 2, input_size: int = 256, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_size = input_size
        side = lenet_feature_size(input_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.AvgPool2d(2),
            nn.Conv2d(16, 120, 5), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(120 * side * side, 84), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(84, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tile logits ``(N, n_classes)``."""
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"LeNet5 expects (N, {', '.join(map(str, expected))}) input, "
                             f"got {tuple(x.shape)}")  # fmt: skip
        return self.classifier(self.features(x))
