"""Task recipes, one module per ``python -m training`` sub-command (see ``_common``)."""

from __future__ import annotations

import importlib
from types import ModuleType

#: Sub-command name -> module implementing it. Order is the order of ``--help``.
TASKS: dict[str, str] = {
    "tissue": "training.tasks.tissue",
    "mri": "training.tasks.mri",
    "ct": "training.tasks.ct",
    "nuclei-tiles": "training.tasks.nuclei_tiles",
    "nuclei": "training.tasks.nuclei",
    "stain": "training.tasks.stain",
}


def load_task(name: str) -> ModuleType:
    """The module of task ``name`` (``KeyError`` naming the known tasks if unknown)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name])


def available_tasks() -> dict[str, ModuleType]:
    """The task modules that exist in this installation, by name."""
    out = {}
    for name, module in TASKS.items():
        try:
            out[name] = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    return out
