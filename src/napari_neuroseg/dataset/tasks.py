"""The tasks, defined once: names, what each item needs, export modality and fixed classes.

A *task* is what a dataset is for (its manifest's ``task``), what the plugin exports, and the
``python -m training`` sub-command that trains on it. Every list of task names in the package
and in ``training`` derives from :data:`TASKS`, and every fixed class map from the
``*_CLASSES`` maps here (``tests/dataset/test_tasks.py`` checks that the copies agree). This
module is torch-free and imports nothing of the package, so every layer may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = [
    "CT_CLASSES",
    "EXPORT_MODALITIES",
    "FIXED_CLASS_MAPS",
    "LGG_TISSUE_CLASSES",
    "MRI_CLASSES",
    "NUCLEI_CLASSES",
    "TASKS",
    "TASK_NAMES",
    "TASK_RULES",
    "TILE_CLASSES",
    "MaskKind",
    "Task",
    "TaskRule",
    "class_names",
]

MaskKind = Literal["semantic", "instance"]

#: The four LGG tissue regions (the tissue task's classes when it trains ``lgg-tissue``).
LGG_TISSUE_CLASSES = {0: "background", 1: "cellular tumour", 2: "leading edge",
                      3: "infiltrating tumour"}
#: FLAIR abnormality on MRI slices (``mri``).
MRI_CLASSES = {0: "background", 1: "FLAIR abnormality"}
#: Slice labels of a head-CT series (``ct``).
CT_CLASSES = {0: "no metastasis", 1: "metastasis"}
#: Instance masks: every id > 0 is one nucleus (``nuclei``).
NUCLEI_CLASSES = {0: "background", 1: "nucleus"}
#: Tile labels (``nuclei-tiles``).
TILE_CLASSES = {0: "NO_NUCLEUS", 1: "NUCLEI"}



def class_names(class_map: Mapping[int, str]) -> tuple[str, ...]:
    """The names of a class map of ids ``0 ... n - 1``, in id order (a model's ``classes``).

    Parameters
    ----------
    class_map : mapping of int to str
        One of the ``*_CLASSES`` maps.

    Returns
    -------
    tuple of str
        ``class_map[0], class_map[1], ...``.
    """
    return tuple(class_map[i] for i in range(len(class_map)))


@dataclass(frozen=True)
class TaskRule:
    """What a task needs of each item.

    Attributes
    ----------
    mask : {"semantic", "instance"} or None
        The kind of mask the task requires; None when items carry a ``label`` instead.
    label : bool
        Whether every item needs a ``label`` (a class id of the class map).
    empty_mask_ok : bool
        Whether a mask holding only background (0) is accepted.
    domain : bool
        Whether every item needs a ``domain`` ("A" or "B"; stain translation).
    """

    mask: MaskKind | None
    label: bool
    empty_mask_ok: bool
    domain: bool = False


@dataclass(frozen=True)
class Task:
    """One task.

    Attributes
    ----------
    name : str
        The manifest's ``task`` and the ``python -m training`` sub-command.
    rule : TaskRule
        What each item needs.
    modality : str or None
        The modality the plugin exports it with by default; None when the plugin does not
        export it.
    classes : mapping of int to str, or None
        The class map every dataset of the task has; None when the dataset chooses it.
    """

    name: str
    rule: TaskRule
    modality: str | None
    classes: Mapping[int, str] | None


#: Every task, in the order of ``python -m training --help``. MRI and nuclei tiles without a
#: lesion or nucleus are valid negatives; an all-background tissue mask is almost always an
#: export mistake.
TASKS: tuple[Task, ...] = (
    Task("tissue", TaskRule(mask="semantic", label=False, empty_mask_ok=False), "HE", None),
    Task("mri", TaskRule(mask="semantic", label=False, empty_mask_ok=True), "MR", MRI_CLASSES),
    Task("ct", TaskRule(mask=None, label=True, empty_mask_ok=True), "CT", CT_CLASSES),
    Task("nuclei-tiles", TaskRule(mask=None, label=True, empty_mask_ok=True), "HE",
         TILE_CLASSES),
    Task("nuclei", TaskRule(mask="instance", label=False, empty_mask_ok=True), "HE",
         NUCLEI_CLASSES),
    Task("stain", TaskRule(mask=None, label=False, empty_mask_ok=True, domain=True), None, None),
)

#: The task names, in :data:`TASKS` order.
TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)
#: The rule of each task, by name.
TASK_RULES: Mapping[str, TaskRule] = MappingProxyType({t.name: t.rule for t in TASKS})
#: The tasks the plugin exports, by name, with their default modality.
EXPORT_MODALITIES: Mapping[str, str] = MappingProxyType(
    {t.name: t.modality for t in TASKS if t.modality is not None})
#: The tasks whose datasets all have one class map, by name.
FIXED_CLASS_MAPS: Mapping[str, Mapping[int, str]] = MappingProxyType(
    {t.name: t.classes for t in TASKS if t.classes is not None})
