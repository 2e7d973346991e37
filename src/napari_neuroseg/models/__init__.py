"""Models described by data: specs, registry, safetensors checkpoints, devices, the runner
and the model source (which weights a run uses).

Importing this package builds no network: architectures are imported by the registry only
when a model is built.
"""

from napari_neuroseg.models.checkpoint import load_checkpoint, save_checkpoint
from napari_neuroseg.models.device import resolve_device
from napari_neuroseg.models.registry import DEFAULT_SPECS, PREFERRED_MODELS, ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.source import ModelSource, ModelSourceError
from napari_neuroseg.models.spec import InputSpec, ModelSpec, SpecError

__all__ = [
    "DEFAULT_SPECS",
    "PREFERRED_MODELS",
    "InputSpec",
    "ModelRegistry",
    "ModelRunner",
    "ModelSource",
    "ModelSourceError",
    "ModelSpec",
    "SpecError",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]
