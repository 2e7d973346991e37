"""ResNet-50 slice classifier for head CT (the CT metastasis recipe, docs/training-recipes.md:
metastasis present / absent).

The backbone is a plain-torch ResNet-50 (bottleneck blocks 3-4-6-3, stride on the 3x3
convolution as in torchvision >= 0.2 "v1.5") with torchvision's module names, so a
torchvision-format ResNet-50 state dict (ImageNet, RadImageNet, ...) loads by name through
:meth:`ResNet50Slice.load_torchvision_state_dict`. The stem takes one channel (a windowed CT
slice) and the head is the CT metastasis recipe's ``Linear(2048, 512) -> ReLU -> Dropout(0.4) ->
Linear(512, 1)``.

Training follows a three-stage curriculum (classifier, then + layer4, then + layer3):
:func:`curriculum_stage` says which groups train at which learning rate,
:meth:`ResNet50Slice.set_stage` freezes the rest and :meth:`ResNet50Slice.param_groups`
gives optimizer groups. Slice logits become patient logits by max pooling
(:mod:`napari_neuroseg.models.patient_pool`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

BLOCKS_PER_LAYER = (3, 4, 6, 3)
STAGE_GROUPS = ("stem", "layer1", "layer2", "layer3", "layer4", "classifier")  # input to output
# The CT metastasis recipe's learning rates per stage (stage -> ((group, lr), ...)); tuples keep it
# immutable.
_CURRICULUM = MappingProxyType(
    {
        1: (("classifier", 5e-5),),
        2: (("layer4", 1e-5), ("classifier", 5e-5)),
        3: (("layer3", 5e-6), ("layer4", 1e-5), ("classifier", 5e-5)),
    }
)
Conv1Reduction = Literal["sum", "mean"]


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 -> 3x3 (strided) -> 1x1 (x4 channels), identity shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual unit output ``relu(F(x) + shortcut(x))``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_channels, width, stride)]
    layers += [Bottleneck(width * Bottleneck.expansion, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class LoadReport:
    """What :meth:`ResNet50Slice.load_torchvision_state_dict` did.

    Attributes
    ----------
    loaded : tuple of str
        Model keys that received a tensor.
    missing : tuple of str
        Backbone keys the state dict did not have (``num_batches_tracked`` excluded).
    unexpected : tuple of str
        State-dict keys with no counterpart in the model (``fc.*`` excluded).
    ignored : tuple of str
        State-dict keys deliberately skipped (the ImageNet ``fc`` head).
    conv1_reduced : str or None
        ``"sum"`` or ``"mean"`` when the RGB stem was reduced to the model's channels.
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    conv1_reduced: str | None = None


class ResNet50Slice(nn.Module):
    """ResNet-50 with a single-channel stem and the CT metastasis recipe's binary head.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for a windowed CT slice).
    hidden : int
        Width of the head's hidden layer.
    dropout : float
        Dropout probability in the head.

    Notes
    -----
    ``forward`` maps ``(N, in_channels, H, W)`` float32 to ``(N, 1)`` logits (sigmoid gives
    the probability of a metastasis on that slice). Any ``H, W >= 32`` works (global average
    pooling); the CT metastasis recipe uses 256 x 256.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 512, dropout: float = 0.4) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"ResNet50Slice: in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, strides, channels = (64, 128, 256, 512), (1, 2, 2, 2), 64
        for i, (width, blocks, stride) in enumerate(
            zip(widths, BLOCKS_PER_LAYER, strides, strict=True)
        ):
            setattr(self, f"layer{i + 1}", _make_layer(channels, width, blocks, stride))
            channels = width * Bottleneck.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )  # fmt: skip
        self._frozen: frozenset[str] = frozenset()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero the last BN of each residual branch: every block starts as the identity.
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output before pooling, ``(N, 2048, H/32, W/32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Slice logits ``(N, 1)`` for ``(N, in_channels, H, W)`` input."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet50Slice expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    # -- curriculum ----------------------------------------------------------------------

    def stage_modules(self) -> dict[str, nn.Module]:
        """Parameter groups, input to output: ``stem``, ``layer1``..``layer4``, ``classifier``.

        ``stem`` is ``conv1`` + ``bn1``. Every parameter of the model is in exactly one group.
        """
        parts = (nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3,
                 self.layer4, self.classifier)  # fmt: skip
        return dict(zip(STAGE_GROUPS, parts, strict=True))

    def set_stage(self, stage: int) -> dict[str, float]:
        """Freeze everything except the groups that train in curriculum ``stage``.

        Frozen groups get ``requires_grad=False`` and their BatchNorm layers stay in eval mode
        (running statistics are not updated) even after ``model.train()``.

        Parameters
        ----------
        stage : int
            1, 2 or 3 (see :func:`curriculum_stage`).

        Returns
        -------
        dict
            ``{group: learning rate}`` of the trainable groups.
        """
        rates = curriculum_stage(stage)
        self.set_trainable(rates)
        return rates

    def set_trainable(self, groups: Sequence[str] | Mapping[str, Any]) -> None:
        """Make exactly ``groups`` (names from :meth:`stage_modules`) trainable; freeze the rest."""
        modules = self.stage_modules()
        unknown = sorted(set(groups) - set(modules))
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; known: {list(modules)}")
        for name, module in modules.items():
            module.requires_grad_(name in groups)
        self._frozen = frozenset(set(modules) - set(groups))
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNet50Slice:
        """Like :meth:`torch.nn.Module.train`; BatchNorm layers of frozen groups stay in eval."""
        super().train(mode)
        if mode:
            modules = self.stage_modules()
            for name in self._frozen:
                for sub in modules[name].modules():
                    if isinstance(sub, nn.BatchNorm2d):
                        sub.eval()
        return self

    def param_groups(
        self, stage: int | None = None, lrs: Mapping[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups with per-group learning rates.

        Parameters
        ----------
        stage : int, optional
            Curriculum stage whose groups and rates to use (:func:`curriculum_stage`).
        lrs : mapping, optional
            ``{group: lr}`` used instead of (or, with ``stage``, on top of) the write-up's rates.

        Returns
        -------
        list of dict
            ``[{"name": group, "params": [...], "lr": lr}, ...]`` for ``torch.optim``; only
            parameters with ``requires_grad`` are included.
        """
        rates: dict[str, float] = curriculum_stage(stage) if stage is not None else {}
        rates.update(lrs or {})
        if not rates:
            raise ValueError("param_groups needs a curriculum stage or explicit lrs")
        modules = self.stage_modules()
        groups = []
        for name, lr in rates.items():
            if name not in modules:
                raise ValueError(f"unknown parameter group {name!r}; known: {list(modules)}")
            params = [p for p in modules[name].parameters() if p.requires_grad]
            if params:
                groups.append({"name": name, "params": params, "lr": float(lr)})
        return groups

    # -- pretrained weights --------------------------------------------------------------

    def load_torchvision_state_dict(
        self,
        state_dict: Mapping[str, torch.Tensor],
        strict_backbone: bool = True,
        conv1_reduction: Conv1Reduction = "sum",
    ) -> LoadReport:
        """Load a torchvision-format ResNet-50 state dict into the backbone.

        Keys are matched by name (a leading ``module.`` is stripped); ``fc.*`` (the ImageNet
        head) is ignored and ``classifier`` keeps its initialisation. An RGB ``conv1.weight``
        ``(64, 3, 7, 7)`` is reduced over its input-channel axis to one channel. The default
        ``"sum"`` keeps the response to a grey image: a grey slice copied into R, G and B gives
        ``sum_c W_c * x``, which is what ``bn1``'s running statistics were estimated on;
        ``"mean"`` would shrink that response three-fold and mis-normalise it in eval mode.

        Parameters
        ----------
        state_dict : mapping of str to Tensor
            E.g. ``torchvision.models.resnet50().state_dict()`` or RadImageNet weights.
        strict_backbone : bool
            Raise ``KeyError`` when backbone keys are missing or unknown keys are present.
        conv1_reduction : {"sum", "mean"}
            How an RGB stem becomes a single-channel one.

        Returns
        -------
        LoadReport

        Raises
        ------
        ValueError
            A tensor's shape does not match (the message names the key and both shapes).
        KeyError
            ``strict_backbone`` and keys are missing or unexpected.
        """
        own = self.state_dict()
        given = {_strip_prefix(k): v for k, v in state_dict.items()}
        ignored = sorted(k for k in given if k.startswith("fc."))
        loaded: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        reduced: str | None = None
        for key, tensor in given.items():
            if key in ignored:
                continue
            if key.startswith("classifier.") or key not in own:
                unexpected.append(key)
                continue
            if key == "conv1.weight" and tensor.shape != own[key].shape:
                tensor, reduced = self._reduce_stem(tensor, conv1_reduction), conv1_reduction
            if tuple(tensor.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"state dict key {key!r} has shape {tuple(tensor.shape)}, the model needs "
                    f"{tuple(own[key].shape)}: is this a ResNet-50 state dict?"
                )
            loaded[key] = tensor.detach().to(dtype=own[key].dtype)
        missing = sorted(
            k for k in own
            if k not in loaded and not k.startswith("classifier.")
            and not k.endswith("num_batches_tracked")
        )  # fmt: skip
        if strict_backbone and (missing or unexpected):
            raise KeyError(
                f"torchvision state dict does not fit ResNet50Slice: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
                "pass strict_backbone=False to load what matches"
            )
        self.load_state_dict(loaded, strict=False)
        return LoadReport(
            loaded=tuple(sorted(loaded)),
            missing=tuple(missing),
            unexpected=tuple(sorted(unexpected)),
            ignored=tuple(ignored),
            conv1_reduced=reduced,
        )

    def _reduce_stem(self, weight: torch.Tensor, how: Conv1Reduction) -> torch.Tensor:
        if how not in ("sum", "mean"):
            raise ValueError(f"conv1_reduction must be 'sum' or 'mean', got {how!r}")
        if weight.ndim != 4 or self.in_channels != 1:
            raise ValueError(
                f"state dict key 'conv1.weight' has shape {tuple(weight.shape)}, the model needs "
                f"{tuple(self.conv1.weight.shape)}; only an RGB stem can be reduced to 1 channel"
            )
        reduce = weight.sum if how == "sum" else weight.mean
        return reduce(dim=1, keepdim=True)


def _strip_prefix(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def curriculum_stage(stage: int) -> dict[str, float]:
    """Trainable groups and learning rates of the CT metastasis recipe's curriculum stage.

    Parameters
    ----------
    stage : int
        1: classifier only (5e-5); 2: + layer4 (1e-5); 3: + layer3 (5e-6).

    Returns
    -------
    dict
        A new ``{group: learning rate}`` dict.
    """
    if stage not in _CURRICULUM:
        raise ValueError(f"curriculum stage must be one of {sorted(_CURRICULUM)}, got {stage!r}")
    return dict(_CURRICULUM[stage])
