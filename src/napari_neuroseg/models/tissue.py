"""LGG tissue segmenter: the 8-class GBM network plus the LGG tissue recipe's class-mapping head.

The GBM network (``self.gbm``) is the GBM_WSSM FC-DenseNet
(:class:`~napari_neuroseg.models.fcdensenet.FCDenseNet`, FC-DenseNet103 by default) that
gives ``n_source_classes`` logits (the 8 IvyGAP region classes). The mapping head
(``self.mapping``) turns those logits into the LGG classes: 1x1 convolution to 16 channels +
ReLU, 1x1 convolution to ``n_target_classes`` (background, cellular tumour, leading edge,
infiltrating tumour). An 8-class checkpoint therefore transfers unchanged
(:meth:`TissueSegmenter.load_source_state_dict`), and progressive unfreezing can address the
network by layer (:meth:`TissueSegmenter.set_trainable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from napari_neuroseg.models._blocks import count_parameters, parameterised_leaves
from napari_neuroseg.models.fcdensenet import (
    FCDENSENET103_BOTTLENECK,
    FCDENSENET103_DOWN,
    FCDenseNet,
)


def _mapping_head(n_source: int, hidden: int, n_target: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(n_source, hidden, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, n_target, kernel_size=1),
    )


class TissueSegmenter(nn.Module):
    """8-class GBM FC-DenseNet with an optional 8 -> 4 class-mapping head (the LGG tissue recipe,
    docs/training-recipes.md).

    With the defaults the GBM network is the authors' FC-DenseNet103: 9,321,320 trainable
    parameters (9.4 M counting batch-norm statistics, as Keras does), 9,321,532 with the
    mapping head. Narrower or shallower variants (``first_filters``, ``growth_rate``,
    ``down_blocks``, ``bottleneck_layers``) train on a CPU; an imported ``GBM_WSSM.h5`` needs
    the defaults.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for RGB H&E).
    n_source_classes : int
        Classes of the GBM network (8).
    n_target_classes : int
        Classes out of the mapping head (4: background, CT, LE, IT).
    mapping_head : bool
        False gives the bare GBM model, whose output is the ``n_source_classes`` logits.
    first_filters, growth_rate : int
        Filters of the first convolution (48) and of every dense layer (16).
    down_blocks : sequence of int
        Dense layers per block on the way down (4, 5, 7, 10, 12); the way up mirrors them.
    bottleneck_layers : int
        Dense layers of the bottleneck block (15).
    dropout : float
        Dropout of the dense layers and transitions down (0.2).
    hidden_features : int
        Channels between the two 1x1 convolutions of the mapping head (16 in the LGG tissue recipe).
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_source_classes: int = 8,
        n_target_classes: int = 4,
        mapping_head: bool = True,
        first_filters: int = 48,
        growth_rate: int = 16,
        down_blocks: Sequence[int] = FCDENSENET103_DOWN,
        bottleneck_layers: int = FCDENSENET103_BOTTLENECK,
        dropout: float = 0.2,
        hidden_features: int = 16,
    ) -> None:
        super().__init__()
        self.n_source_classes = n_source_classes
        self.hidden_features = hidden_features
        self.gbm = FCDenseNet(in_channels, n_source_classes, first_filters=first_filters,
                              growth_rate=growth_rate, down_blocks=down_blocks,
                              bottleneck_layers=bottleneck_layers, dropout=dropout)
        self.mapping: nn.Sequential | None = None
        self.n_target_classes = n_source_classes
        if mapping_head:
            self.replace_head(n_target_classes)

    @property
    def out_channels(self) -> int:
        """Logit channels of :meth:`forward` (target classes, or source ones without head)."""
        return self.n_target_classes

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.gbm.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Target-class logits ``(N, n_target_classes, H, W)`` (GBM logits without a head)."""
        logits = self.gbm(x)
        return logits if self.mapping is None else self.mapping(logits)

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The GBM network's own ``(N, n_source_classes, H, W)`` logits."""
        return self.gbm(x)

    def replace_head(self, n_target_classes: int) -> None:
        """Put a freshly initialised mapping head ``n_source_classes -> n_target_classes``.

        The GBM network (weights and ``requires_grad`` flags) is kept; the new head is
        trainable and on the GBM network's device and dtype.

        Parameters
        ----------
        n_target_classes : int
            Classes out of the new head.
        """
        if n_target_classes < 1:
            raise ValueError(f"a mapping head needs at least one class, got {n_target_classes}")
        reference = self.gbm.head.weight
        self.mapping = _mapping_head(
            self.n_source_classes, self.hidden_features, n_target_classes
        ).to(device=reference.device, dtype=reference.dtype)
        self.n_target_classes = n_target_classes

    def load_source_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the weights of an 8-class GBM model into :attr:`gbm`.

        Parameters
        ----------
        state_dict : mapping of str to torch.Tensor
            State dict of an ``FCDenseNet`` built like :attr:`gbm`, or of a ``TissueSegmenter``
            built with ``mapping_head=False`` (keys prefixed ``gbm.``), e.g. as read from a
            safetensors file.

        Raises
        ------
        ValueError
            When the weights hold a mapping head, have another class count or do not fit
            the GBM network; the message names the offending keys.
        """
        mapping_keys = [k for k in state_dict if k.startswith("mapping.")]
        if mapping_keys:
            raise ValueError(
                "these weights include a mapping head "
                f"({mapping_keys[0]!r}...): load them with load_state_dict, not as a source model"
            )
        stripped = {k.removeprefix("gbm."): v for k, v in state_dict.items()}
        head = stripped.get("head.weight")
        if head is not None and head.shape[0] != self.n_source_classes:
            raise ValueError(
                f"source weights have {head.shape[0]} classes (head.weight {tuple(head.shape)}) "
                f"but this TissueSegmenter expects n_source_classes={self.n_source_classes}"
            )
        try:
            self.gbm.load_state_dict(stripped, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"source weights do not fit the GBM network (down blocks "
                f"{self.gbm.down_blocks}): {err}"
            ) from err

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Named groups in forward order: ``gbm.first``, ``gbm.down.0`` ... ``gbm.head``,
        ``mapping``.

        Returns
        -------
        list of (str, torch.nn.Module)
            Names are attribute paths (``model.get_submodule(name)``).
        """
        groups = [(f"gbm.{name}", module) for name, module in self.gbm.layer_groups()]
        if self.mapping is not None:
            groups.append(("mapping", self.mapping))
        return groups

    def trainable_layers(self) -> list[tuple[str, nn.Module]]:
        """Every parameterised leaf layer (convolution, norm) in forward order.

        Returns
        -------
        list of (str, torch.nn.Module)
            Qualified names (``gbm.up.4.block.layers.3.2``, ``mapping.2``...) and layers.
        """
        layers = parameterised_leaves(self.gbm, "gbm")
        if self.mapping is not None:
            layers += parameterised_leaves(self.mapping, "mapping")
        return layers

    def _head_prefix(self) -> str:
        return "gbm.head" if self.mapping is None else "mapping"

    def set_trainable(self, last_n: int | None) -> int:
        """Freeze all but the head and the last ``last_n`` layers (progressive unfreezing).

        Layers are those of :meth:`trainable_layers`. The head (``mapping``, or ``gbm.head``
        without a mapping head) is always trainable; ``last_n`` counts the layers before it,
        from the output back. Frozen batch-norm layers keep their running statistics in
        training mode (as Keras does for non-trainable layers).

        Parameters
        ----------
        last_n : int or None
            ``None``: everything trainable; ``0``: the head only; ``n``: the head and the
            last ``n`` layers before it (all of them when ``n`` exceeds their number).

        Returns
        -------
        int
            Number of trainable parameter values.
        """
        if last_n is not None and (not isinstance(last_n, int) or last_n < 0):
            raise ValueError(f"last_n must be None or a non-negative int, got {last_n!r}")
        head = self._head_prefix()
        body = [m for name, m in self.trainable_layers() if not name.startswith(head)]
        unfrozen = body if last_n is None else body[len(body) - min(last_n, len(body)) :]
        self.requires_grad_(False)
        self.get_submodule(head).requires_grad_(True)
        for module in unfrozen:
            module.requires_grad_(True)
        self.train(self.training)
        return count_parameters(self, trainable_only=True)

    def train(self, mode: bool = True) -> TissueSegmenter:
        """Set training mode; frozen batch-norm layers stay in eval mode (fixed statistics)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                    module.eval()
        return self
