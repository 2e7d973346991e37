"""The training dataset layout: ``manifest.json`` + ``images/`` + ``masks/`` (torch-free).

Every ``python -m training`` task reads this layout and the plugin's export writes it; the
converters turn the layouts people already have into it. See ``docs/dataset-format.md``.
"""

from .convert_consep import convert_consep
from .convert_ct import convert_ct_labels
from .convert_ivygap import convert_ivygap
from .convert_kaggle import convert_kaggle_lgg
from .convert_monuseg import convert_monuseg
from .convert_nuclei import convert_nuclei_tiles
from .layout import Dataset
from .manifest import FORMAT, FORMAT_VERSION, DatasetError, Item
from .tasks import TASK_RULES, TaskRule
from .writer import DatasetWriter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TASK_RULES",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "Item",
    "TaskRule",
    "convert_consep",
    "convert_ct_labels",
    "convert_ivygap",
    "convert_kaggle_lgg",
    "convert_monuseg",
    "convert_nuclei_tiles",
]
