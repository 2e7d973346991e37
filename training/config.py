"""Run configuration: dataclasses filled from YAML (``--config``) and then command-line values.

Precedence: dataclass defaults (the seeds' hyperparameters) < YAML file < command line. An
unknown key, or a value of the wrong type, is an error that names it (with its dotted path
for nested sections) before anything is trained. :func:`effective_config` is what the run
prints at start and saves as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from training.runfolder import RunFolder, atomic_write_json

__all__ = [
    "ConfigError",
    "TrainConfig",
    "build_config",
    "config_from_dict",
    "effective_config",
    "format_config",
    "load_yaml",
    "save_config",
]

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the keys and the source."""


@dataclass
class TrainConfig:
    """Options shared by every task (task recipes subclass this and add their own fields).

    Attributes
    ----------
    data, init, out : str or None
        Dataset folder, checkpoint to start from, run folder.
    epochs, batch_size, num_workers, seed : int
    device : str
        ``auto``, ``cpu``, ``cuda``...
    resume, amp : bool
    channels_last : bool or None
        Channels-last memory format (None: on CUDA only; true also speeds up convolutional
        networks on the CPU).
    lr, weight_decay : float
    grad_clip : float or None
    early_stopping_patience : int or None
    monitor, mode : str
        Value choosing the best checkpoint, ``min`` or ``max``.
    synthetic : bool
        The data are synthetic: the checkpoint, the report and the plugin say so. Also set
        when any dataset item's ``extra`` has ``"synthetic": true``.
    """

    data: str | None = None
    init: str | None = None
    out: str | None = None
    epochs: int = 10
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    amp: bool = True
    channels_last: bool | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    synthetic: bool = False


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (empty file -> ``{}``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: configuration file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, not {type(data).__name__}")
    return data


def _optional_inner(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    inner, optional = _optional_inner(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{source}: {key} may not be null")
    origin = typing.get_origin(inner)
    if dataclasses.is_dataclass(inner):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping")
        return config_from_dict(inner, value, source=source, prefix=f"{key}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, not {value!r}")
        args = [a for a in typing.get_args(inner) if a is not Ellipsis]
        item = args[0] if len(args) == 1 else Any
        items = [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or inner is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping")
        return dict(value)
    return _scalar(value, inner, key, source)


def _scalar(value: Any, tp: Any, key: str, source: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
    else:
        return value
    raise ConfigError(f"{source}: {key} must be {tp.__name__}, not {value!r}")


def config_from_dict(cls: type[C], data: dict[str, Any], *, source: str = "config",
                     prefix: str = "", base: C | None = None) -> C:
    """Build ``cls`` from a mapping, checking names and types.

    Parameters
    ----------
    cls : dataclass type
    data : dict
        Values; missing keys keep their defaults (or ``base``'s values).
    source : str
        Where the values come from, used in messages (a file name, ``"command line"``).
    prefix : str
        Dotted path of a nested section, for messages.
    base : dataclass instance, optional
        Values to start from instead of the defaults.

    Raises
    ------
    ConfigError
        Unknown keys (all of them listed, with the valid ones) or values of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys: {', '.join(prefix + k for k in fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        current = getattr(base, name, None) if base is not None else None
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            values[name] = config_from_dict(type(current), value, source=source,
                                            prefix=f"{prefix}{name}.", base=current)
        else:
            values[name] = _coerce(value, hints[name], prefix + name, source)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def build_config(cls: type[C], yaml_path: str | os.PathLike[str] | None = None,
                 overrides: dict[str, Any] | None = None) -> C:
    """Defaults, then the YAML file, then command-line ``overrides`` (None values ignored)."""
    config = cls()
    if yaml_path is not None:
        config = config_from_dict(cls, load_yaml(yaml_path), source=str(yaml_path),
                                  base=config)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return config_from_dict(cls, given, source="command line", base=config)


def effective_config(config: Any) -> dict[str, Any]:
    """The configuration as plain JSON values (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def format_config(config: Any) -> str:
    """The effective configuration as YAML text, for printing at the start of a run."""
    return yaml.safe_dump(effective_config(config), sort_keys=False, default_flow_style=None)


def save_config(config: Any, run: RunFolder) -> Path:
    """Write ``config.json`` into the run folder (atomically)."""
    return atomic_write_json(run.config, effective_config(config))
