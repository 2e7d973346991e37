"""File helpers for :mod:`.checkpoint`: the sidecar format, temporary names, hashing, JSON.

Reading a sidecar needs no network, so :mod:`.registry` reads specs from here and
:mod:`.checkpoint` (which builds networks through the registry) imports both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_neuroseg.models.spec import ModelSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "checkpoint_paths",
    "cpu_state_dict",
    "json_default",
    "read_sidecar",
    "read_spec",
    "sha256_of",
    "software_versions",
    "spec_from_sidecar",
    "summarize_history",
    "swap_in_pair",
    "temporary_sibling",
]

CHECKPOINT_FORMAT = "napari-neuroseg-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``(weights, sidecar)`` pair for ``model``, ``model.safetensors`` or ``model.json``."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint's JSON sidecar.

    Parameters
    ----------
    path : str or os.PathLike
        ``model``, ``model.safetensors`` or ``model.json``.

    Returns
    -------
    dict
        The sidecar, with a known ``format`` and ``format_version``.

    Raises
    ------
    FileNotFoundError
        No sidecar next to the weights.
    CheckpointError
        Not JSON, not a napari-neuroseg checkpoint, or a format version this software does
        not know (a newer one: update napari-neuroseg).
    """
    _, sidecar = checkpoint_paths(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: checkpoint sidecar not found")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{sidecar}: not a JSON checkpoint sidecar ({err})") from err
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{sidecar}: not a {CHECKPOINT_FORMAT} sidecar (format {found!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{sidecar}: unknown format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{sidecar}: format_version {version} was written by a newer napari-neuroseg; "
            f"this one reads up to {FORMAT_VERSION}: update napari-neuroseg"
        )
    return data


def read_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """The :class:`ModelSpec` stored in a checkpoint's sidecar (weights are not read).

    Raises
    ------
    FileNotFoundError, CheckpointError
        As :func:`read_sidecar`, or an invalid spec (the message names the sidecar).
    """
    _, sidecar = checkpoint_paths(path)
    return spec_from_sidecar(read_sidecar(sidecar), sidecar)


def spec_from_sidecar(data: dict[str, Any], sidecar: Path) -> ModelSpec:
    """The spec in an already read sidecar ``data``; CheckpointError naming ``sidecar``."""
    try:
        return ModelSpec.from_dict(data["spec"])
    except (KeyError, TypeError, ValueError) as err:  # SpecError is a ValueError
        raise CheckpointError(f"{sidecar}: invalid model spec in the sidecar: {err}") from err


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name in the folder of ``path`` (same file system: renames are atomic)."""
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        if not candidate.exists():
            return candidate


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages that wrote a checkpoint."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("napari-neuroseg", "safetensors", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


def _as_numbers(value: Any) -> np.ndarray | None:
    """``value`` as a non-empty float array if it is a sequence of numbers, else None."""
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 1 else None


def summarize_history(history: dict[str, Any] | None) -> dict[str, Any]:
    """Per-epoch number lists become {n, first, last, min, max}; other JSON values stay."""
    summary: dict[str, Any] = {}
    for key, value in (history or {}).items():
        arr = _as_numbers(value)
        if arr is not None:
            known = not np.isnan(arr).all()  # e.g. the precision of a class never predicted
            summary[key] = {
                "n": int(arr.size),
                "first": float(arr.flat[0]),
                "last": float(arr.flat[-1]),
                "min": float(np.nanmin(arr)) if known else None,
                "max": float(np.nanmax(arr)) if known else None,
            }
        else:
            summary[key] = value.item() if isinstance(value, np.generic) else value
    return summary


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the state dict; tensors sharing memory are cloned apart."""
    state, seen = {}, set()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage().data_ptr()
        state[key] = t.clone() if storage in seen else t  # safetensors refuses shared memory
        seen.add(storage)
    return state


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for NumPy scalars/arrays and tuples."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def swap_in_pair(tmp_weights: Path, weights: Path, tmp_sidecar: Path, sidecar: Path) -> None:
    """Rename weights then sidecar into place; restore the old weights if the sidecar fails."""
    backup = temporary_sibling(weights, suffix=".old") if weights.exists() else None
    if backup is not None:
        os.replace(weights, backup)
    try:
        os.replace(tmp_weights, weights)
        os.replace(tmp_sidecar, sidecar)
    except BaseException:
        if backup is not None:
            os.replace(backup, weights)
        else:
            weights.unlink(missing_ok=True)
        raise
    if backup is not None:
        backup.unlink(missing_ok=True)
