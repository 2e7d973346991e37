"""Checks behind :class:`~napari_neuroseg.models.registry.ModelRegistry`: import strings,
constructor keyword arguments and sidecar sniffing (errors name the model and what to fix)."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

from napari_neuroseg.models.spec import ModelSpec, SpecError

__all__ = [
    "RegistryError",
    "check_kwargs",
    "check_target_string",
    "import_target",
    "looks_like_sidecar",
]


class RegistryError(LookupError):
    """An unknown model or architecture, or an architecture that cannot be imported."""


def check_target_string(key: str, target: str) -> None:
    module, sep, name = target.partition(":")
    if not sep or not module or not name.isidentifier():
        raise RegistryError(
            f"architecture {key!r}: target {target!r} is not of the form 'package.module:Class'"
        )


def import_target(key: str, target: str) -> type:
    """Import ``"module:Class"``; errors name the architecture key and the target."""
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RegistryError(f"architecture {key!r} ({target}) cannot be imported: {err}") from err
    try:
        return getattr(module, class_name)
    except AttributeError as err:
        raise RegistryError(
            f"architecture {key!r} ({target}): module {module_name} has no {class_name!r}"
        ) from err


def check_kwargs(spec: ModelSpec, cls: type) -> None:
    """Raise :class:`SpecError` if ``cls`` does not accept ``spec.arch_kwargs``."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**spec.arch_kwargs)
    except TypeError as err:
        accepted = ", ".join(
            p.name
            for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        raise SpecError(
            f"model {spec.name!r}: architecture {spec.architecture!r} ({cls.__qualname__}) "
            f"rejects arch_kwargs {spec.arch_kwargs}: {err}; it accepts: {accepted}"
        ) from err


def looks_like_sidecar(path: Path, format_name: str) -> bool:
    """True when ``path`` is a small JSON file whose ``format`` is ours (others are skipped)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh).get("format") == format_name
    except (OSError, ValueError, AttributeError):
        return False
