"""Task recipes, one sub-package per ``python -m training`` task (see ``_common``).

Each sub-package keeps its task's modules; its ``task`` module is the sub-command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from napari_neuroseg.dataset.tasks import TASK_NAMES

#: Sub-command name -> module implementing it, in the order of ``--help``: one per dataset task
#: (:data:`napari_neuroseg.dataset.tasks.TASK_NAMES`), in the package named after it.
TASKS: dict[str, str] = {
    name: f"training.tasks.{name.replace('-', '_')}.task" for name in TASK_NAMES}


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
            if not _is_part_of(err.name, module):
                raise
    return out


def _is_part_of(missing: str | None, module: str) -> bool:
    """Whether ``missing`` (a ``ModuleNotFoundError``'s name) is the task module ``module`` or
    its package: the task is not installed, as opposed to one of its imports failing."""
    package = module.rpartition(".")[0]
    return missing in (module, package)
