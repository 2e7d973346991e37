"""Weights that ship with the package, and where a model's weights come from.

The package data folder ``napari_neuroseg/models/weights/`` holds checkpoint pairs
(``<registry-name>.safetensors`` + ``<registry-name>.json``, the format of
:mod:`.checkpoint`). :class:`~napari_neuroseg.models.registry.ModelRegistry` registers them
when it is created, so they are the default models. Every model also gets one line of
provenance for the UI, the command line and the docs (:func:`weights_provenance`).

This module reads no weights: :func:`check_weights_file` only checks the safetensors header
and the file size (cheap enough for every registry); the SHA-256 and the tensor shapes are
checked when the checkpoint is loaded.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

from napari_neuroseg.models.data_licences import licence_text
from napari_neuroseg.models.spec import ModelSpec

__all__ = [
    "RANDOM_WEIGHTS",
    "SYNTHETIC_WEIGHTS",
    "BundledWeightsError",
    "bundled_weights_folder",
    "check_weights_file",
    "training_data_text",
    "weights_provenance",
]

RANDOM_WEIGHTS = "random weights (no trained model shipped)"
SYNTHETIC_WEIGHTS = "trained on SYNTHETIC data - not clinically meaningful"
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


class BundledWeightsError(ValueError):
    """A weights file that is not a complete safetensors file; the message names it."""


def bundled_weights_folder() -> Path:
    """The package data folder of the shipped checkpoints (it may hold none).

    Found next to this module, so it is the installed package's folder when napari-neuroseg
    was installed from a wheel, and the source tree's in an editable install.
    """
    from importlib.resources import files

    return Path(str(files("napari_neuroseg.models").joinpath("weights")))


def check_weights_file(path: str | os.PathLike[str]) -> None:
    """Check that ``path`` is a whole safetensors file, reading only its header.

    Raises
    ------
    FileNotFoundError
        No such file.
    BundledWeightsError
        Too short, a header that is not a JSON object, or a size that does not match the
        tensors the header declares (a truncated or padded file).
    """
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise BundledWeightsError(f"{p}: not a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise BundledWeightsError(f"{p}: not a safetensors file (header length {n})")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise BundledWeightsError(f"{p}: unreadable safetensors header ({e})") from e
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        raise BundledWeightsError(
            f"{p}: {size} bytes but its header declares {expected} (truncated or corrupt)"
        )


def usable_bundled_sidecars(
    folder: str | os.PathLike[str],
    read_spec: Callable[[Path], ModelSpec],
    check: Callable[[ModelSpec], object],
    *,
    known: Container[str] = (),
) -> list[Path]:
    """The sidecars of ``folder``'s shipped checkpoints that can be used, in file-name order.

    Each ``<name>.json`` must be a checkpoint sidecar whose spec is named ``<name>``, next to
    a complete ``<name>.safetensors`` (:func:`check_weights_file`) that ``check`` accepts. A
    pair that is not is skipped with a ``UserWarning`` naming it.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder of checkpoint pairs (none for a missing folder).
    read_spec : callable
        Reads a sidecar's spec (raising ``OSError``, ``ValueError`` or ``LookupError``).
    check : callable
        Raises the same when the spec's model cannot be built.
    known : container of str
        Names of the models declared already (the warning says whether one keeps its spec).

    Returns
    -------
    list of pathlib.Path
        The usable sidecars.
    """
    usable: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return usable
    for sidecar in sorted(folder.glob("*.json")):
        try:
            spec = read_spec(sidecar)
            if spec.name != sidecar.stem:
                raise BundledWeightsError(f"its spec is named {spec.name!r}, not {sidecar.stem!r}")
            check_weights_file(sidecar.with_suffix(".safetensors"))
            check(spec)
        except (OSError, ValueError, LookupError) as err:  # CheckpointError, SpecError...
            fallback = (
                "the declared spec stays, with random weights"
                if sidecar.stem in known
                else "no such model is registered"
            )
            warnings.warn(
                f"bundled checkpoint {sidecar} is not used: {err} ({fallback})",
                UserWarning,
                stacklevel=4,
            )
            continue
        usable.append(sidecar)
    return usable


def training_data_text(spec: ModelSpec) -> str | None:
    """What the spec says the weights were trained on (``extra["training_data"]``), or None.

    Training writes a string (see ``training.tasks._common.build_spec``); a dict with a
    ``name`` (or ``path``) is accepted too.
    """
    value: Any = spec.extra.get("training_data")
    if isinstance(value, dict):
        value = value.get("name") or value.get("path")
    return str(value) if value else None


def weights_provenance(
    spec: ModelSpec | None, checkpoint: str | os.PathLike[str] | None, *, bundled: bool = False
) -> str:
    """One line that says where a model's weights come from.

    Parameters
    ----------
    spec : ModelSpec or None
        The checkpoint's spec (its ``synthetic`` flag, ``extra["training_data"]`` and
        ``extra["training_data_licence"]``).
    checkpoint : path or None
        The weights file; ``None`` = the network runs with random weights.
    bundled : bool
        The checkpoint ships with the package (documented in docs/models.md).

    Returns
    -------
    str
        ``"random weights (no trained model shipped)"``, ``"trained on SYNTHETIC data - not
        clinically meaningful"``, ``"trained on real data (<dataset>, see docs/models.md)"``
        for a bundled checkpoint, or ``"trained on real data (<dataset>)"`` /
        ``"trained weights from <file> (training data not recorded)"`` for another one.
        A sidecar's ``extra["training_note"]`` (e.g. that LGG classes were learnt from GBM
        region maps) follows after ``"; "``. When the sidecar records the training data's
        licence, ``"; data licence: <licence>"`` follows (with ``", non-commercial use
        only"`` for a non-commercial set such as the Kaggle LGG MRI, MoNuSeg or IvyGAP), see
        :mod:`.data_licences`.
    """
    if checkpoint is None or spec is None:
        return RANDOM_WEIGHTS
    if spec.synthetic:
        return SYNTHETIC_WEIGHTS
    data = training_data_text(spec)
    if bundled:
        line = f"trained on real data ({data + ', ' if data else ''}see docs/models.md)"
    elif data:
        line = f"trained on real data ({data})"
    else:
        line = f"trained weights from {Path(checkpoint).name} (training data not recorded)"
    note = (spec.extra or {}).get("training_note")
    if note:
        line = f"{line}; {note}"
    licence = licence_text(spec.extra)
    return f"{line}; {licence}" if licence else line
