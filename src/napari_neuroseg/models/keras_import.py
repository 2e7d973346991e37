"""Import the authors' Keras ``GBM_WSSM.h5`` (FC-DenseNet103) into a safetensors checkpoint.

The GBM_WSSM network (Keras 2.2 / TensorFlow 1.13) is laid out exactly as
:class:`~napari_neuroseg.models.fcdensenet.FCDenseNet`, and its weighted layers form a chain:
each one depends on the one created before it, so the file's ``layer_names`` order (Keras'
``model.layers``) is the creation order, which is also the forward order in which the
PyTorch network registers its parameterised layers (``Conv2d``, ``BatchNorm2d``,
``ConvTranspose2d``). The import therefore pairs the two lists one by one, checks kind and
shapes, converts the layouts and loads everything at once (nothing is loaded if any layer
does not fit):

==================  ============================  ===============================
Keras layer         Keras arrays                  PyTorch
==================  ============================  ===============================
Conv2D              kernel ``(kh, kw, in, out)``  weight ``(out, in, kh, kw)``
Conv2DTranspose     kernel ``(kh, kw, out, in)``  weight ``(in, out, kh, kw)``
either              bias ``(out,)``               bias
BatchNormalization  gamma, beta, moving_mean,     weight, bias, running_mean,
                    moving_variance               running_var
==================  ============================  ===============================

The file is read with h5py (:mod:`._keras_h5`): arrays and strings only, never a pickle.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from napari_neuroseg.models._blocks import parameterised_leaves
from napari_neuroseg.models._checkpoint_files import sha256_of
from napari_neuroseg.models._keras_h5 import KerasFile, read_keras_h5
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.fcdensenet import FCDenseNet
from napari_neuroseg.models.spec import ModelSpec

if TYPE_CHECKING:
    from napari_neuroseg.models.registry import ModelRegistry

__all__ = [
    "FCDENSENET103_KWARGS",
    "KerasImport",
    "gbm_wssm_spec",
    "import_keras_checkpoint",
    "keras_state_dict",
    "load_keras_weights",
]

#: ``arch_kwargs`` of the ``tissue`` architecture for the authors' FC-DenseNet103 (GBM_WSSM).
FCDENSENET103_KWARGS = {
    "in_channels": 3, "n_source_classes": 8, "first_filters": 48, "growth_rate": 16,
    "down_blocks": [4, 5, 7, 10, 12], "bottleneck_layers": 15, "dropout": 0.2,
    "mapping_head": False,
}
_KERAS_CLASS = {"conv": "Conv2D", "conv_transpose": "Conv2DTranspose",
                "batchnorm": "BatchNormalization"}
_BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}
_TRAINABLE = {"kernel", "bias", "gamma", "beta"}


@dataclass(frozen=True)
class KerasImport:
    """What :func:`load_keras_weights` loaded.

    Attributes
    ----------
    source : pathlib.Path
        The Keras file.
    sha256 : str
        SHA-256 of its bytes.
    layers : tuple of (str, str)
        ``(Keras layer name, PyTorch layer name)`` pairs, in order.
    kinds : dict of str to int
        Layers per Keras class (``Conv2D``, ``Conv2DTranspose``, ``BatchNormalization``).
    n_parameters : int
        Trainable values (kernels, biases, gammas, betas).
    n_values : int
        All values, batch-norm moving statistics included (Keras' "Total params").
    keras_version : str or None
        As recorded in the file.
    checkpoint : pathlib.Path or None
        The weights file written by :func:`import_keras_checkpoint`.
    """

    source: Path
    sha256: str
    layers: tuple[tuple[str, str], ...]
    kinds: dict[str, int]
    n_parameters: int
    n_values: int
    keras_version: str | None = None
    checkpoint: Path | None = None

    def summary(self) -> str:
        """A few lines for people: layers by kind, parameters, source."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.kinds.items())
        version = f" (Keras {self.keras_version})" if self.keras_version else ""
        lines = [f"read {self.source.name}{version}, sha256 {self.sha256}",
                 f"loaded {len(self.layers)} weighted layers: {kinds}",
                 f"parameters: {self.n_parameters:,} trainable, {self.n_values:,} with the "
                 "batch-norm moving statistics",
                 f"first: {self.layers[0][0]} -> {self.layers[0][1]}; "
                 f"last: {self.layers[-1][0]} -> {self.layers[-1][1]}"]
        if self.checkpoint is not None:
            lines.append(f"wrote {self.checkpoint}")
        return "\n".join(lines)


def _torch_kind(module: nn.Module) -> str:
    if isinstance(module, nn.ConvTranspose2d):
        return "conv_transpose"
    if isinstance(module, nn.Conv2d):
        return "conv"
    return "batchnorm" if isinstance(module, nn.BatchNorm2d) else type(module).__name__


def _keras_shapes(kind: str, module: nn.Module) -> dict[str, tuple[int, ...]]:
    """The arrays (Keras names and layout) that would fill ``module``."""
    if kind == "batchnorm":
        return {name: (module.num_features,) for name in _BN_NAMES}
    a, b, kh, kw = module.weight.shape  # conv: (out, in, ...); transposed: (in, out, ...)
    shapes = {"kernel": (kh, kw, b, a)}
    if module.bias is not None:
        shapes["bias"] = (module.bias.shape[0],)
    return shapes


def _converted(kind: str, prefix: str, weights: dict[str, np.ndarray],
               reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keras arrays as PyTorch state-dict entries (``prefix.weight`` ...)."""
    if kind == "batchnorm":
        named = {_BN_NAMES[k]: v for k, v in weights.items()}
    else:  # both kernels: (kh, kw, x, y) -> (y, x, kh, kw)
        named = {"weight": weights["kernel"].transpose(3, 2, 0, 1),
                 **{k: v for k, v in weights.items() if k != "kernel"}}
    out = {}
    for name, array in named.items():
        key = f"{prefix}.{name}"
        out[key] = torch.from_numpy(np.ascontiguousarray(array)).to(reference[key].dtype)
    return out


def _mismatch(source: Path, position: int, counts: str, keras_name: str, torch_name: str,
              what: str) -> ValueError:
    return ValueError(f"{source}: weighted layer {position} does not fit ({counts}): Keras "
                      f"layer {keras_name!r} {what} for PyTorch layer {torch_name!r}")


def _shape_problem(found: dict[str, tuple[int, ...]],
                   expected: dict[str, tuple[int, ...]]) -> str | None:
    if set(found) != set(expected):
        return f"has weights {sorted(found)}, expected {sorted(expected)}"
    for name, shape in expected.items():
        if found[name] != shape:
            return f"{name} has shape {found[name]}, expected {shape}"
    return None


def keras_state_dict(keras: KerasFile, model: nn.Module
                     ) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """Pair the file's weighted layers with ``model``'s parameterised layers and convert.

    Returns
    -------
    state : dict of str to torch.Tensor
        The converted entries, keyed as ``model.state_dict()``.
    pairs : list of (str, str)
        ``(Keras layer name, PyTorch layer name)`` in order.

    Raises
    ------
    ValueError
        At the first layer of another kind, with other weights or other shapes, or where
        one list runs out before the other; the message names both layers and the counts.
    """
    targets = parameterised_leaves(model)
    counts = f"the file has {len(keras.layers)} weighted layers, the model {len(targets)}"
    reference = model.state_dict()
    state, pairs = {}, []
    paired = zip(keras.layers, targets, strict=False)  # a shorter list is reported below
    for i, (layer, (torch_name, module)) in enumerate(paired, start=1):
        kind = _torch_kind(module)
        if layer.kind != kind:
            what = (f"is a {_KERAS_CLASS.get(layer.kind, layer.kind)}, expected a "
                    f"{_KERAS_CLASS.get(kind, kind)} ({type(module).__name__})")
            raise _mismatch(keras.path, i, counts, layer.name, torch_name, what)
        found = {k: tuple(v.shape) for k, v in layer.weights.items()}
        problem = _shape_problem(found, _keras_shapes(kind, module))
        if problem:
            raise _mismatch(keras.path, i, counts, layer.name, torch_name, problem)
        state.update(_converted(kind, torch_name, layer.weights, reference))
        pairs.append((layer.name, torch_name))
    n = len(pairs)
    if len(keras.layers) > n:
        raise ValueError(f"{keras.path}: {counts}: Keras layer {keras.layers[n].name!r} "
                         f"(weighted layer {n + 1}) has no PyTorch layer")
    if len(targets) > n:
        raise ValueError(f"{keras.path}: {counts}: PyTorch layer {targets[n][0]!r} "
                         f"(weighted layer {n + 1}) has no Keras layer")
    return state, pairs


def load_keras_weights(model: FCDenseNet, path: str | os.PathLike[str]) -> KerasImport:
    """Load a Keras HDF5 file of the same network into ``model``, all layers or none.

    Parameters
    ----------
    model : FCDenseNet
        Built with the file's architecture (FC-DenseNet103 for ``GBM_WSSM.h5``); any module
        whose parameterised layers are registered in forward order also works.
    path : str or os.PathLike
        Keras ``save_weights`` or ``save`` file (HDF5).

    Returns
    -------
    KerasImport
        Layers paired, parameter counts, the file's SHA-256.

    Raises
    ------
    ImportError
        h5py is missing.
    FileNotFoundError
        No such file.
    ValueError
        Not HDF5, not a Keras weights file, or the first layer that does not fit (see
        :func:`keras_state_dict`); ``model`` is then left unchanged.
    """
    keras = read_keras_h5(path)
    state, pairs = keras_state_dict(keras, model)
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    kinds = Counter(_KERAS_CLASS[layer.kind] for layer in keras.layers)
    values = [(k, v.size) for layer in keras.layers for k, v in layer.weights.items()]
    return KerasImport(
        source=keras.path, sha256=sha256_of(keras.path), layers=tuple(pairs),
        kinds=dict(kinds), n_parameters=sum(n for k, n in values if k in _TRAINABLE),
        n_values=sum(n for _, n in values), keras_version=keras.keras_version)


def gbm_wssm_spec(registry: ModelRegistry | None = None) -> ModelSpec:
    """The registry's ``gbm-tissue-8`` spec, with the FC-DenseNet103 ``arch_kwargs`` if it
    does not have them yet."""
    from napari_neuroseg.models.registry import ModelRegistry

    spec = (registry or ModelRegistry()).get("gbm-tissue-8")
    if not set(FCDENSENET103_KWARGS) <= set(spec.arch_kwargs):
        spec = dataclasses.replace(spec, arch_kwargs=dict(FCDENSENET103_KWARGS))
    return spec


def import_keras_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    spec: ModelSpec | None = None,
    registry: ModelRegistry | None = None,
) -> KerasImport:
    """Convert a Keras ``GBM_WSSM.h5`` into a safetensors checkpoint with its sidecar.

    Parameters
    ----------
    src : str or os.PathLike
        The Keras HDF5 file.
    dst : str or os.PathLike
        Checkpoint path (``name``, ``name.safetensors`` or ``name.json``); both files are
        written atomically by :func:`~napari_neuroseg.models.checkpoint.save_checkpoint`.
    spec : ModelSpec, optional
        A ``tissue`` spec without mapping head (default: :func:`gbm_wssm_spec`). Its
        ``extra`` gains ``weights_source`` (``"imported from Keras <file name>"``) and
        ``sha256`` (of ``src``).
    registry : ModelRegistry, optional
        Where the architecture is looked up.

    Returns
    -------
    KerasImport
        What was loaded, with ``checkpoint`` set to the weights file.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As :func:`load_keras_weights`; also a spec whose network has no FCDenseNet ``gbm``.
    """
    from napari_neuroseg.models.registry import ModelRegistry

    registry = registry or ModelRegistry()
    spec = spec or gbm_wssm_spec(registry)
    model = registry.build(spec)
    network = getattr(model, "gbm", None)
    if not isinstance(network, FCDenseNet) or getattr(model, "mapping", None) is not None:
        raise ValueError(f"model {spec.name!r} ({spec.architecture}, {spec.arch_kwargs}) has "
                         "no FCDenseNet 'gbm' network without mapping head to import into")
    loaded = load_keras_weights(network, src)
    spec = dataclasses.replace(spec, synthetic=False, extra={
        **spec.extra, "weights_source": f"imported from Keras {loaded.source.name}",
        "sha256": loaded.sha256})
    weights = save_checkpoint(dst, model.eval(), spec)
    return dataclasses.replace(loaded, checkpoint=weights)
