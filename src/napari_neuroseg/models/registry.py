"""Model registry: declared models (specs), architectures by import string, checkpoints.

Architectures are named by ``"module:Class"`` strings and imported only when a model is
built, so reading the registry costs no torch model construction. A :class:`ModelRegistry`
is an ordinary object (no module-level state): each viewer or script owns its own.

The declared models (:data:`DEFAULT_SPECS`, built by :func:`default_specs` in
:mod:`._default_specs`) follow the training recipes (docs/training-recipes.md). Some ship trained
weights in the package (:func:`~napari_neuroseg.models.bundled.bundled_weights_folder`): a default
registry registers them, so they are the default models; :meth:`ModelRegistry.list_models` says
which model has a checkpoint and where its weights come from (:meth:`ModelRegistry.provenance`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from napari_neuroseg.models._checkpoint_files import (
    CHECKPOINT_FORMAT,
    checkpoint_paths,
    read_spec,
)
from napari_neuroseg.models._default_specs import (
    LEGACY_NO_WEIGHTS,
    PREFERRED_MODELS,
    default_specs,
)
from napari_neuroseg.models._registry_checks import (
    RegistryError,
    check_kwargs,
    check_target_string,
    import_target,
    looks_like_sidecar,
)
from napari_neuroseg.models.bundled import (
    bundled_weights_folder,
    usable_bundled_sidecars,
    weights_provenance,
)
from napari_neuroseg.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn

RegistryError.__module__ = __name__  # defined with the checks, raised and documented here

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_SPECS",
    "PREFERRED_MODELS",
    "ModelRegistry",
    "RegistryError",
    "default_specs",
]

ARCHITECTURES: Mapping[str, str] = MappingProxyType(
    {
        "unet": "napari_neuroseg.models.unet:UNet",
        "transunet": "napari_neuroseg.models.transunet:TransUNet",
        "tissue": "napari_neuroseg.models.tissue:TissueSegmenter",
        "cyclegan_generator": "napari_neuroseg.models.cyclegan:ResnetGenerator",
        "patchgan": "napari_neuroseg.models.cyclegan:PatchDiscriminator",
        "resnet50_slice": "napari_neuroseg.models.resnet:ResNet50Slice",
        "lenet5": "napari_neuroseg.models.lenet:LeNet5",
        "hovernet": "napari_neuroseg.models.hovernet:HoVerNet",
    }
)
"""Architecture key -> ``"module:Class"`` of the built-in networks (read-only)."""

DEFAULT_SPECS: Mapping[str, ModelSpec] = MappingProxyType(
    {spec.name: spec for spec in default_specs()}
)
"""The declared models by name (read-only; a :class:`ModelRegistry` starts from fresh copies)."""


class ModelRegistry:
    """The models a session knows: specs, architectures and available checkpoints.

    Parameters
    ----------
    specs : iterable of ModelSpec, optional
        Specs to start with. ``None`` (default) = fresh copies of :data:`DEFAULT_SPECS`.
    architectures : mapping, optional
        Extra architectures, key -> ``"module:Class"`` string or class, added to (or
        replacing) :data:`ARCHITECTURES`.
    bundled : bool or path, optional
        Register the checkpoints that ship with the package (their sidecar spec replaces the
        declared one). ``None`` (default) = only when ``specs`` is ``None``, so a registry of
        one's own specs stays as given; ``False`` = never (the declared specs, as a training
        run starts from); a folder = the checkpoints of that folder instead. A bundled file
        that cannot be used is skipped with a warning naming it (the declared spec stays).

    Examples
    --------
    >>> registry = ModelRegistry()
    >>> registry.get("lgg-tissue").classes[1]
    'cellular tumour'
    >>> registry.provenance("lgg-tissue")
    'random weights (no trained model shipped)'
    >>> model = registry.build("nuclei-lenet")  # doctest: +SKIP
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec] | None = None,
        *,
        architectures: Mapping[str, str | type[nn.Module]] | None = None,
        bundled: bool | str | os.PathLike[str] | None = None,
    ) -> None:
        self._architectures: dict[str, str | type] = dict(ARCHITECTURES)
        self._specs: dict[str, ModelSpec] = {}
        self._checkpoints: dict[str, Path] = {}
        self._bundled: set[str] = set()
        for key, target in (architectures or {}).items():
            self.register_architecture(key, target, replace=True)
        for spec in default_specs() if specs is None else specs:
            self.register(spec)
        if bundled is None:
            bundled = specs is None
        if bundled is not False:
            folder = bundled_weights_folder() if bundled is True else Path(bundled)
            self.register_bundled(folder)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __repr__(self) -> str:
        return f"ModelRegistry({len(self._specs)} models, {len(self._architectures)} archs)"

    def names(self) -> list[str]:
        """Registered model names, in registration order."""
        return list(self._specs)

    def specs(self) -> dict[str, ModelSpec]:
        """All registered specs by name (copies: changing them does not change the registry)."""
        return {name: copy.deepcopy(spec) for name, spec in self._specs.items()}

    def architectures(self) -> dict[str, str | type]:
        """Architecture key -> ``"module:Class"`` string or class."""
        return dict(self._architectures)

    def get(self, name: str) -> ModelSpec:
        """The spec registered under ``name`` (a copy).

        Raises
        ------
        RegistryError
            If no model has that name; the message lists the known names.
        """
        try:
            return copy.deepcopy(self._specs[name])
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise RegistryError(f"unknown model {name!r}; known models: {known}") from None

    def register(self, spec: ModelSpec, *, replace: bool = False) -> None:
        """Add a model spec under ``spec.name``.

        Parameters
        ----------
        spec : ModelSpec
            The model; its ``architecture`` must be a registered key.
        replace : bool
            Allow replacing a spec already registered under that name.

        Raises
        ------
        RegistryError
            Unknown architecture (the message lists the known keys) or a name already taken
            while ``replace`` is False.
        """
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"register() needs a ModelSpec, got {type(spec).__name__}")
        self._architecture_target(spec.architecture, model=spec.name)
        if spec.name in self._specs and not replace:
            raise RegistryError(
                f"a model named {spec.name!r} is already registered; pass replace=True"
            )
        self._specs[spec.name] = copy.deepcopy(spec)

    def register_architecture(
        self, key: str, target: str | type[nn.Module], *, replace: bool = False
    ) -> None:
        """Make architecture ``key`` available: ``"package.module:Class"`` or a class.

        A string is imported only when a model of that architecture is built.

        Raises
        ------
        RegistryError
            A malformed target string, or ``key`` already registered while ``replace`` is
            False.
        """
        if isinstance(target, str):
            check_target_string(key, target)
        elif not inspect.isclass(target):
            raise TypeError(f"architecture {key!r}: target must be a 'module:Class' or a class")
        if key in self._architectures and not replace:
            raise RegistryError(f"architecture {key!r} is already registered; pass replace=True")
        self._architectures[key] = target

    def register_checkpoint(self, path: str | os.PathLike[str]) -> ModelSpec:
        """Register the model stored in a checkpoint (its sidecar's spec replaces any spec
        of the same name) and remember the checkpoint for :meth:`list_models`.

        Parameters
        ----------
        path : str or os.PathLike
            ``model.safetensors``, ``model.json`` or ``model`` (no suffix).

        Returns
        -------
        ModelSpec
            The spec read from the sidecar.

        Raises
        ------
        FileNotFoundError
            No sidecar.
        CheckpointError
            The sidecar is unreadable, of an unknown format version or holds an invalid spec.
        """
        weights, _ = checkpoint_paths(path)
        spec = read_spec(path)
        if LEGACY_NO_WEIGHTS in spec.description:  # written from an older declared spec
            spec = dataclasses.replace(
                spec, description=spec.description.replace(LEGACY_NO_WEIGHTS, "")
            )
        self.register(spec, replace=True)
        self._checkpoints[spec.name] = weights
        self._bundled.discard(spec.name)
        return spec

    def register_bundled(self, folder: str | os.PathLike[str]) -> list[str]:
        """Register the shipped checkpoints of ``folder``, skipping broken ones with a warning.

        Each ``<name>.json`` must be a checkpoint sidecar whose spec is named ``<name>``,
        next to a complete ``<name>.safetensors`` of a known architecture that accepts the
        spec's ``arch_kwargs``. A file that is not is skipped with a ``UserWarning`` naming
        it, and the model keeps its declared spec (random weights). Weights are not hashed
        here: a changed file is refused when it is loaded.

        Returns
        -------
        list of str
            Names of the models registered, in file-name order (none for a missing folder).
        """
        names: list[str] = []
        for sidecar in usable_bundled_sidecars(folder, read_spec, self.check, known=self._specs):
            spec = self.register_checkpoint(sidecar)
            self._bundled.add(spec.name)
            names.append(spec.name)
        return names

    def register_checkpoints(self, folder: str | os.PathLike[str]) -> list[str]:
        """Register every checkpoint (``*.json`` sidecar with its weights) in ``folder``.

        Returns
        -------
        list of str
            Names of the models registered, in file-name order.
        """
        names = []
        for sidecar in sorted(Path(folder).glob("*.json")):
            if sidecar.with_suffix(".safetensors").is_file() and looks_like_sidecar(
                sidecar, CHECKPOINT_FORMAT
            ):
                names.append(self.register_checkpoint(sidecar).name)
        return names

    def checkpoint(self, name: str) -> Path | None:
        """The registered (or bundled) checkpoint's weights file for ``name``, or ``None``."""
        self.get(name)
        return self._checkpoints.get(name)

    def is_bundled(self, name: str) -> bool:
        """Whether model ``name`` runs with weights that ship with the package."""
        self.get(name)
        return name in self._bundled

    def provenance(self, name: str) -> str:
        """Where model ``name``'s weights come from, in one line for people.

        ``"trained on real data (<dataset>, see docs/models.md)"``, ``"trained on SYNTHETIC
        data - not clinically meaningful"`` or ``"random weights (no trained model shipped)"``
        (see :func:`~napari_neuroseg.models.bundled.weights_provenance`).
        """
        spec = self.get(name)
        return weights_provenance(spec, self._checkpoints.get(name), bundled=name in self._bundled)

    def resolve_architecture(self, key: str) -> type[nn.Module]:
        """Import and return the class of architecture ``key``.

        Raises
        ------
        RegistryError
            Unknown key, or a module/class that cannot be imported (with the reason).
        """
        target = self._architecture_target(key)
        cls = import_target(key, target) if isinstance(target, str) else target
        from torch import nn

        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
            raise RegistryError(f"architecture {key!r} ({target}) is not a torch.nn.Module class")
        return cls

    def build(self, spec_or_name: ModelSpec | str) -> nn.Module:
        """Construct the network of a model with random weights (``arch_kwargs`` passed on).

        Parameters
        ----------
        spec_or_name : ModelSpec or str
            A spec (need not be registered) or the name of a registered one.

        Returns
        -------
        torch.nn.Module
            The network, in training mode, on the CPU.

        Raises
        ------
        RegistryError
            Unknown model or architecture.
        SpecError
            The architecture's constructor rejects the spec's ``arch_kwargs``.
        """
        spec = self.get(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
        cls = self.check(spec)
        return cls(**copy.deepcopy(spec.arch_kwargs))

    def check(self, spec_or_name: ModelSpec | str) -> type[nn.Module]:
        """Check, without building anything, that a model can be built.

        Imports the architecture and matches ``arch_kwargs`` against its constructor's
        signature.

        Returns
        -------
        type
            The architecture class.

        Raises
        ------
        RegistryError, SpecError
            As :meth:`build`.
        """
        spec = self.get(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
        cls = self.resolve_architecture(spec.architecture)
        check_kwargs(spec, cls)
        return cls

    def list_models(self) -> list[dict[str, Any]]:
        """One row per model for tables and menus.

        Returns
        -------
        list of dict
            Keys ``name``, ``task``, ``architecture``, ``classes`` (list), ``synthetic``,
            ``checkpoint`` (weights path as str, or ``None`` when no weights are available),
            ``bundled`` (the weights ship with the package), ``provenance`` (see
            :meth:`provenance`) and ``description``.
        """
        rows = []
        for name, spec in self._specs.items():
            ckpt = self._checkpoints.get(name)
            rows.append(
                {
                    "name": name,
                    "task": spec.task,
                    "architecture": spec.architecture,
                    "classes": list(spec.classes),
                    "synthetic": spec.synthetic,
                    "checkpoint": None if ckpt is None else str(ckpt),
                    "bundled": name in self._bundled,
                    "provenance": self.provenance(name),
                    "description": spec.description,
                }
            )
        return rows

    def _architecture_target(self, key: str, *, model: str | None = None) -> str | type:
        try:
            return self._architectures[key]
        except KeyError:
            known = ", ".join(sorted(self._architectures))
            who = f"model {model!r}: " if model else ""
            raise RegistryError(
                f"{who}unknown architecture {key!r}; known architectures: {known}"
            ) from None
