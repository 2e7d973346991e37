"""Checkpoints: weights as safetensors plus a JSON sidecar that describes the model.

``model.safetensors`` holds the state dict (tensors only: loading it can never run code);
``model.json`` holds the :class:`ModelSpec`, class map, normalisation, threshold, training
summary, metrics and the SHA-256 of the weights file, so a checkpoint says by itself how to
build, feed and read its network, and a weights file swapped under a sidecar is detected.

Pickled ``.pth``/``.pt`` files from elsewhere are only read by the explicit
:func:`convert_pickled_checkpoint`, with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from napari_neuroseg.models._checkpoint_files import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_paths,
    cpu_state_dict,
    json_default,
    read_sidecar,
    read_spec,
    sha256_of,
    software_versions,
    spec_from_sidecar,
    summarize_history,
    swap_in_pair,
    temporary_sibling,
)
from napari_neuroseg.models.device import prepare_for_inference, resolve_device
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec

CheckpointError.__module__ = __name__  # defined with the sidecar helpers, documented here

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedModel",
    "check_state_dict",
    "checkpoint_paths",
    "convert_pickled_checkpoint",
    "load_checkpoint",
    "read_sidecar",
    "read_spec",
    "save_checkpoint",
    "sha256_of",
    "temporary_sibling",
]

_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_MAX_LISTED = 8
_GLOBAL_RE = re.compile(r"GLOBAL\s+([\w.]+)", re.IGNORECASE)


@dataclass
class LoadedModel:
    """A network restored from a checkpoint.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode, on the requested device.
    spec : ModelSpec
        From the sidecar.
    sidecar : dict
        The whole sidecar (metrics, history summary, software versions, ...).
    path : pathlib.Path
        The weights file.
    """

    model: nn.Module
    spec: ModelSpec
    sidecar: dict[str, Any] = field(repr=False)
    path: Path


def _sidecar(spec: ModelSpec, model: nn.Module, history, metrics, sha: str) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "class_map": {str(i): name for i, name in enumerate(spec.classes)},
        "normalization": dict(spec.input.normalization),
        "threshold": spec.threshold,
        "history": summarize_history(history),
        "metrics": dict(metrics or {}),
        "synthetic": spec.synthetic,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "software": software_versions(),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "weights_sha256": sha,
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    spec: ModelSpec,
    *,
    history: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save ``model``'s weights and sidecar atomically.

    Both files are written under temporary names first; then the weights and last the
    sidecar are renamed into place. If anything fails, the temporaries are removed and any
    previous checkpoint at ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike
        ``model``, ``model.safetensors`` or ``model.json``: both files are written.
    model : torch.nn.Module
        The network (not modified).
    spec : ModelSpec
        The model's description, stored in the sidecar.
    history : dict, optional
        Training history; lists of numbers are summarised (n, first, last, min, max).
    metrics : dict, optional
        Evaluation metrics (JSON values).

    Returns
    -------
    pathlib.Path
        The weights file.

    Raises
    ------
    CheckpointError
        ``history`` or ``metrics`` cannot be written as JSON.
    FileNotFoundError
        The folder does not exist.
    """
    weights, sidecar = checkpoint_paths(path)
    if not weights.parent.is_dir():
        raise FileNotFoundError(f"{weights}: folder {weights.parent} does not exist")
    tmp_weights, tmp_sidecar = temporary_sibling(weights), temporary_sibling(sidecar)
    try:
        save_file(cpu_state_dict(model), str(tmp_weights), metadata={"model": spec.name})
        record = _sidecar(spec, model, history, metrics, sha256_of(tmp_weights))
        try:
            text = json.dumps(record, indent=2, default=json_default)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"{sidecar}: history/metrics not JSON-serialisable: {err}"
            ) from err
        tmp_sidecar.write_text(text + "\n", encoding="utf-8")
        swap_in_pair(tmp_weights, weights, tmp_sidecar, sidecar)
    finally:
        for tmp in (tmp_weights, tmp_sidecar):
            tmp.unlink(missing_ok=True)
    return weights


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def check_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, *, source: str, spec: ModelSpec
) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mismatched keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch (file vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source}: weights do not fit model {spec.name!r} ({spec.architecture}, "
            f"{spec.arch_kwargs}); " + "; ".join(problems)
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    registry: ModelRegistry | None = None,
) -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint`, checking it on the way.

    Parameters
    ----------
    path : str or os.PathLike
        ``model``, ``model.safetensors`` or ``model.json``.
    device : str or torch.device
        Where to put the model (see :func:`~napari_neuroseg.models.device.resolve_device`).
    registry : ModelRegistry, optional
        Where the spec's architecture is looked up (default: a fresh registry).

    Returns
    -------
    LoadedModel
        Model in eval mode, spec and sidecar.

    Raises
    ------
    FileNotFoundError
        The weights or the sidecar is missing.
    CheckpointError
        Unknown format or version, invalid spec, weights whose SHA-256 differs from the
        sidecar's ("checkpoint does not match its sidecar"), or weights whose keys/shapes do
        not fit the architecture (listed).
    """
    weights, sidecar = checkpoint_paths(path)
    data = read_sidecar(sidecar)
    spec = spec_from_sidecar(data, sidecar)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: checkpoint weights not found (sidecar {sidecar})")
    if sha256_of(weights) != data.get("weights_sha256"):
        raise CheckpointError(
            f"{weights}: checkpoint does not match its sidecar {sidecar.name} (SHA-256 "
            "differs: the weights were changed or belong to another model)"
        )
    model = (registry or ModelRegistry()).build(spec)
    state = load_file(str(weights), device="cpu")
    check_state_dict(state, model, source=str(weights), spec=spec)
    model.load_state_dict(state, strict=True)
    prepare_for_inference(model, resolve_device(device))
    return LoadedModel(model=model, spec=spec, sidecar=data, path=weights)


def _extract_state_dict(obj: Any, src: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{src}: holds no state dict (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{src}: not a state dict (entries that are not tensors: {_listed(bad)}); "
            "expected a state dict or a dict with 'state_dict' / 'model_state_dict'"
        )
    state = {}
    for key, tensor in obj.items():
        name = str(key)
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        state[name] = tensor
    return state


def _load_weights_only(source: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what to do."""
    if not source.is_file():
        raise FileNotFoundError(f"{source}: file not found")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL_RE.search(str(err))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{source}: refused: the file contains pickled Python objects other than tensors "
            f"and plain containers{what}; unpickling them could run arbitrary code. In the "
            "environment that wrote it, save only the weights: "
            "torch.save(model.state_dict(), path)."
        ) from err
    except Exception as err:  # the unpickler raises many types on files that are not torch's
        raise CheckpointError(
            f"{source}: not a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from err


def convert_pickled_checkpoint(
    src: str | os.PathLike[str],
    spec: ModelSpec,
    dst: str | os.PathLike[str],
    *,
    registry: ModelRegistry | None = None,
    history: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Convert a PyTorch ``.pth``/``.pt`` state dict into a safetensors checkpoint.

    The file is read with ``torch.load(src, map_location="cpu", weights_only=True)``: plain
    tensors, numbers, strings and containers only, so no code in the file can run. A raw
    state dict or a training dict with ``"state_dict"`` / ``"model_state_dict"`` is accepted;
    ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes are stripped.

    Parameters
    ----------
    src : str or os.PathLike
        The pickled file.
    spec : ModelSpec
        The model the weights belong to.
    dst : str or os.PathLike
        Checkpoint path for :func:`save_checkpoint`.
    registry : ModelRegistry, optional
        Where the architecture is looked up.
    history, metrics : dict, optional
        Passed to :func:`save_checkpoint`.

    Returns
    -------
    pathlib.Path
        The new weights file.

    Raises
    ------
    CheckpointError
        The file needs arbitrary objects unpickled (refused), holds no state dict, or its
        keys/shapes do not fit the architecture.
    """
    source = Path(src)
    state = _extract_state_dict(_load_weights_only(source), source)
    model = (registry or ModelRegistry()).build(spec)
    check_state_dict(state, model, source=str(source), spec=spec)
    model.load_state_dict(state, strict=True)
    return save_checkpoint(dst, model, spec, history=history, metrics=metrics)
