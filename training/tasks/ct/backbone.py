"""A pretrained ResNet-50 backbone (e.g. RadImageNet) from a file the user downloaded.

The CT metastasis recipe (docs/training-recipes.md) starts from RadImageNet ResNet-50
weights. Nothing is downloaded here: ``--backbone PATH`` (``backbone:`` in ``--config``)
names a local file holding a **torchvision-layout ResNet-50 state dict** — the names of
``torchvision.models.resnet50().state_dict()``: ``conv1.weight``, ``bn1.{weight, bias,
running_mean, running_var}``, ``layer1.0.conv1.weight`` ... ``layer4.2.bn3.running_var`` and
``layer{1-4}.0.downsample.{0,1}.*``; ``fc.*`` (the pretraining head) and
``*.num_batches_tracked`` may be there and are ignored. ``conv1.weight`` may have 3 input
channels (summed to the single CT channel) or 1.

- ``.safetensors`` files are read with safetensors; any other suffix (``.pth``, ``.pt``,
  ``.bin``) with ``torch.load(weights_only=True)``, which refuses anything but tensors and
  plain containers (no pickled code runs).
- A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped, and a ``module.``,
  ``backbone.``, ``model.`` or ``encoder.`` prefix shared by every key is dropped.
- Every backbone name must be present and no other name may be: otherwise a
  :class:`~training.tasks._common.DataError` names the file and the missing and unexpected
  keys, before anything is loaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from training.tasks._common import DataError

__all__ = ["backbone_keys", "load_pretrained_backbone", "read_state_dict"]

_WRAPPERS = ("state_dict", "model")
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")
_SHOWN = 8


def backbone_keys(model: nn.Module) -> set[str]:
    """The names a backbone file must hold for ``model`` (its ResNet-50 part, BN counters
    left out)."""
    return {k for k in model.state_dict()
            if not k.startswith("classifier.") and not k.endswith("num_batches_tracked")}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped and with a shared prefix dropped.

    Raises
    ------
    DataError
        No such file, unreadable, or not a mapping of names to tensors.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"backbone {file}: no such file")
    try:
        if file.suffix == ".safetensors":
            state: Any = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError,
            SafetensorError) as err:
        raise DataError(f"backbone {file}: not a safetensors file or a tensors-only torch "
                        f"file ({err})") from err
    for key in _WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DataError(f"backbone {file}: expected a state dict (names to tensors), got "
                        f"{type(state).__name__}")
    state = dict(state)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _examples(keys: set[str]) -> str:
    shown = sorted(keys)[:_SHOWN]
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(shown) + more


def load_pretrained_backbone(model: nn.Module, path: str | Path) -> str:
    """Load a torchvision-layout ResNet-50 file into ``model``'s backbone (the head keeps its
    initialisation).

    Parameters
    ----------
    model : ResNet50Slice
        The ``ct-metastasis`` network.
    path : str or pathlib.Path
        The weights file (see the module docstring for the expected layout).

    Returns
    -------
    str
        A one-line summary for the report.

    Raises
    ------
    DataError
        The file is missing or unreadable, misses backbone names or holds others (the
        message names the file and lists both), or a tensor has the wrong shape.
    """
    file = Path(path)
    state = read_state_dict(file)
    expected = backbone_keys(model)
    given = {k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing, unexpected = expected - given, given - expected
    if missing or unexpected:
        raise DataError(
            f"backbone {file}: not a torchvision-layout ResNet-50 state dict: "
            f"{len(missing)} missing key(s) ({_examples(missing) or 'none'}); "
            f"{len(unexpected)} unexpected key(s) ({_examples(unexpected) or 'none'}). "
            "The file must hold the names of torchvision.models.resnet50().state_dict() "
            "(docs/training-recipes.md, 'Pretrained backbone')")
    try:
        report = model.load_torchvision_state_dict(state, strict_backbone=True)
    except (KeyError, ValueError) as err:
        raise DataError(f"backbone {file}: {err}") from err
    stem = f", RGB stem reduced to 1 channel ({report.conv1_reduced})" \
        if report.conv1_reduced else ""
    return (f"Pretrained backbone {file.name}: {len(report.loaded)} tensors loaded"
            f"{stem}; {len(report.ignored)} head tensors ignored; the head starts fresh.")
