"""Read the weighted layers of a Keras 2 HDF5 file with h5py (no Keras, no unpickling).

Private helper of :mod:`napari_neuroseg.models.keras_import`. Two layouts are read:

- ``model.save_weights(path)``: the root's ``layer_names`` attribute lists the layers in
  ``model.layers`` order; each layer's group has a ``weight_names`` attribute
  (``"conv2d_1/kernel:0"``, ...) and the arrays at ``group[weight_name]``;
- ``model.save(path)``: the same under a ``model_weights`` group, with the architecture as
  JSON in the root's ``model_config`` attribute (used here for the layers' class names).

Keras splits an attribute too long for the HDF5 header into ``name0``, ``name1``, ...; both
forms are read. Only datasets and string attributes are read: nothing in the file can run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Keras class names -> the kinds :mod:`.keras_import` matches against PyTorch layers.
KERAS_KINDS = {
    "Conv2D": "conv",
    "Convolution2D": "conv",
    "Conv2DTranspose": "conv_transpose",
    "Deconvolution2D": "conv_transpose",
    "BatchNormalization": "batchnorm",
}


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer that has weights.

    Attributes
    ----------
    name : str
        The layer's name in the file (``"conv2d_7"``).
    kind : str
        ``"conv"``, ``"conv_transpose"``, ``"batchnorm"`` or the Keras class name (or
        ``"unknown"``) for a layer of another kind.
    weights : dict of str to numpy.ndarray
        Arrays by short weight name (``"kernel"``, ``"bias"``, ``"gamma"``, ``"beta"``,
        ``"moving_mean"``, ``"moving_variance"``), in the file's order.
    """

    name: str
    kind: str
    weights: dict[str, np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class KerasFile:
    """The weighted layers of a Keras HDF5 file, in ``model.layers`` order."""

    path: Path
    layers: list[KerasLayer]
    keras_version: str | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _string_list(attrs: Any, name: str) -> list[str] | None:
    """A list-of-strings attribute, joined from Keras' ``name0``, ``name1``... chunks."""
    if name in attrs:
        return [_text(v) for v in np.atleast_1d(attrs[name])]
    chunks, i = [], 0
    while f"{name}{i}" in attrs:
        chunks.extend(_text(v) for v in np.atleast_1d(attrs[f"{name}{i}"]))
        i += 1
    return chunks if i else None


def _class_names(attrs: Any) -> dict[str, str]:
    """Layer name -> Keras class name from a full-model file's ``model_config``."""
    if "model_config" not in attrs:
        return {}
    try:
        config = json.loads(_text(attrs["model_config"]))
        layers = config["config"]["layers"]
        return {layer["config"]["name"]: layer["class_name"] for layer in layers}
    except (ValueError, KeyError, TypeError):
        return {}


def _kind(name: str, class_name: str | None, weights: dict[str, np.ndarray]) -> str:
    if class_name is not None:
        return KERAS_KINDS.get(class_name, class_name)
    if "moving_mean" in weights:
        return "batchnorm"
    kernel = weights.get("kernel")
    if kernel is not None and kernel.ndim == 4:  # a weights-only file: Keras' default names
        lowered = name.lower()
        return "conv_transpose" if "transpose" in lowered or "deconv" in lowered else "conv"
    return "unknown"


def _short(weight_name: str) -> str:
    """``"block/conv2d_3/kernel:0"`` -> ``"kernel"``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def read_keras_h5(path: str | os.PathLike[str]) -> KerasFile:
    """The layers with weights of a Keras HDF5 weights or full-model file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.h5`` / ``.hdf5`` file written by Keras 2 (``save_weights`` or ``save``).

    Returns
    -------
    KerasFile
        The weighted layers in the file's ``layer_names`` order.

    Raises
    ------
    ImportError
        h5py is not installed.
    FileNotFoundError
        No such file.
    ValueError
        Not an HDF5 file, or no ``layer_names`` (not a Keras weights file); the message names
        the file.
    """
    try:
        import h5py
    except ImportError as err:
        raise ImportError("importing Keras weights needs h5py: pip install h5py "
                          "(or napari-neuroseg[keras])") from err
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: file not found")
    try:
        handle = h5py.File(source, "r")
    except OSError as err:
        raise ValueError(f"{source}: not an HDF5 file ({err})") from err
    with handle:
        root = handle
        if "layer_names" not in handle.attrs and "model_weights" in handle:
            root = handle["model_weights"]
        names = _string_list(root.attrs, "layer_names")
        if names is None:
            raise ValueError(f"{source}: no 'layer_names' attribute at the root or in "
                             "'model_weights': not a Keras weights file")
        classes = _class_names(handle.attrs)
        version = root.attrs.get("keras_version", handle.attrs.get("keras_version"))
        layers = []
        for name in names:
            if name not in root:
                raise ValueError(f"{source}: layer {name!r} is listed in 'layer_names' but "
                                 "has no group in the file")
            group = root[name]
            weight_names = _string_list(group.attrs, "weight_names") or []
            weights = {_short(w): np.asarray(group[w]) for w in weight_names}
            if weights:
                layers.append(KerasLayer(name, _kind(name, classes.get(name), weights), weights))
    return KerasFile(source, layers, None if version is None else _text(version))
