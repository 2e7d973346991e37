"""The run folder of one training run, and the resumable training state (no pickle).

Layout of ``RUN_DIR``::

    config.json                      effective configuration
    checkpoints/best.safetensors     best model by the monitored value (+ best.json sidecar)
    checkpoints/last.safetensors     model after the last finished epoch (+ last.json)
    state/last_state.safetensors     tensors needed by --resume (weights, optimiser moments...)
    state/last_state.json            everything else (epoch, history, scalars, structure)
    history.json                     per-epoch values
    metrics.json                     final metrics
    plots/*.png                      curves, confusion matrix, histograms
    report.md                        short report linking the plots

Every file is written under a temporary name and renamed into place. The training state is
committed last: its JSON records the SHA-256 of its tensors file, so a state whose two files
do not belong together is refused instead of silently mixed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from napari_neuroseg.models.checkpoint import sha256_of, temporary_sibling

__all__ = [
    "STATE_FORMAT",
    "RunFolder",
    "StateError",
    "atomic_write_json",
    "atomic_write_text",
    "decode_state",
    "encode_state",
    "load_training_state",
    "save_training_state",
]

STATE_FORMAT = "napari-neuroseg-training-state"
_TENSOR, _TUPLE, _ITEMS, _NDARRAY = "__tensor__", "__tuple__", "__items__", "__ndarray__"


class StateError(ValueError):
    """A training state that cannot be resumed from; the message names the file."""


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary sibling and :func:`os.replace`."""
    target = Path(path)
    tmp = temporary_sibling(target)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (NaN/inf are written as JSON extensions)."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


@dataclass(frozen=True)
class RunFolder:
    """Paths of a run folder (see the module docstring for the layout).

    Parameters
    ----------
    root : pathlib.Path
        The ``RUN_DIR``.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def create(self) -> RunFolder:
        """Create the folder and its sub-folders; returns ``self``."""
        for sub in (self.root, self.checkpoints, self.state_dir, self.plots):
            sub.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        """Best model checkpoint stem (``best.safetensors`` + ``best.json``)."""
        return self.checkpoints / "best"

    @property
    def last(self) -> Path:
        """Last model checkpoint stem."""
        return self.checkpoints / "last"

    @property
    def state_dir(self) -> Path:
        """``state/``."""
        return self.root / "state"

    @property
    def state_tensors(self) -> Path:
        """``state/last_state.safetensors``."""
        return self.state_dir / "last_state.safetensors"

    @property
    def state_json(self) -> Path:
        """``state/last_state.json``."""
        return self.state_dir / "last_state.json"

    @property
    def plots(self) -> Path:
        """``plots/``."""
        return self.root / "plots"

    @property
    def history(self) -> Path:
        """``history.json``."""
        return self.root / "history.json"

    @property
    def metrics(self) -> Path:
        """``metrics.json``."""
        return self.root / "metrics.json"

    @property
    def config(self) -> Path:
        """``config.json``."""
        return self.root / "config.json"

    @property
    def report(self) -> Path:
        """``report.md``."""
        return self.root / "report.md"

    def has_state(self) -> bool:
        """True when a resumable state was committed."""
        return self.state_json.is_file()


def encode_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Turn a nested state (dicts, lists, tuples, tensors, arrays, scalars) into JSON + tensors.

    Tensors and numpy arrays are moved into ``tensors`` under ``prefix``-derived keys and
    replaced by references; dicts with non-string keys and tuples are tagged so that
    :func:`decode_state` restores them exactly.

    Parameters
    ----------
    obj : object
        E.g. ``optimizer.state_dict()``.
    tensors : dict
        Filled with the tensors found (contiguous CPU clones).
    prefix : str
        Key prefix, e.g. ``"optimizer"``.

    Returns
    -------
    object
        A JSON-serialisable structure.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {_NDARRAY: prefix}
    if isinstance(obj, dict):
        items = [[k, encode_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]
        if all(isinstance(k, str) for k in obj):
            return {str(k): v for k, v in items}
        return {_ITEMS: items}
    if isinstance(obj, tuple):
        return {_TUPLE: [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise StateError(f"{prefix}: cannot store a {type(obj).__name__} in a training state")


def decode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {_TENSOR}:
        return tensors[obj[_TENSOR]]
    if set(obj) == {_NDARRAY}:
        return tensors[obj[_NDARRAY]].numpy()
    if set(obj) == {_TUPLE}:
        return tuple(decode_state(v, tensors) for v in obj[_TUPLE])
    if set(obj) == {_ITEMS}:
        return {k: decode_state(v, tensors) for k, v in obj[_ITEMS]}
    return {k: decode_state(v, tensors) for k, v in obj.items()}


def save_training_state(run: RunFolder, state: dict[str, Any]) -> None:
    """Commit a resumable state: tensors to safetensors, the rest to JSON, both atomically.

    Parameters
    ----------
    run : RunFolder
        Created run folder.
    state : dict
        Nested state (see :func:`encode_state`); e.g. ``{"epoch": 3, "model": ...,
        "optimizer": ..., "history": ...}``.
    """
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(state, tensors, "s")
    tmp = temporary_sibling(run.state_tensors)
    try:
        save_file(tensors, str(tmp))
        record = {"format": STATE_FORMAT, "version": 1, "tensors_sha256": sha256_of(tmp),
                  "state": encoded}
        os.replace(tmp, run.state_tensors)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_json(run.state_json, record)


def load_training_state(run: RunFolder) -> dict[str, Any]:
    """Read the state written by :func:`save_training_state`.

    Raises
    ------
    FileNotFoundError
        No committed state in the run folder.
    StateError
        Unknown format, or tensors that do not belong to the JSON (interrupted write).
    """
    if not run.state_json.is_file():
        raise FileNotFoundError(f"{run.state_json}: no training state to resume from")
    try:
        record = json.loads(run.state_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StateError(f"{run.state_json}: not JSON ({err})") from err
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        raise StateError(f"{run.state_json}: not a {STATE_FORMAT} file")
    if not run.state_tensors.is_file():
        raise StateError(f"{run.state_tensors}: missing (state JSON without its tensors)")
    if sha256_of(run.state_tensors) != record.get("tensors_sha256"):
        raise StateError(
            f"{run.state_tensors}: does not match {run.state_json.name} (SHA-256 differs: the "
            "run was interrupted while saving); delete state/ to restart from scratch"
        )
    return decode_state(record["state"], load_file(str(run.state_tensors)))
