"""Where a model's weights come from: a checkpoint file or a registry name, as a picklable value.

A :class:`ModelSource` is what the widgets, the batch runner (``python -m napari_neuroseg
predict``) and the benchmarks pass around: it is cheap to copy and to send to a
dask.distributed worker, and it loads the model only in the process that runs it
(:meth:`ModelSource.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari_neuroseg.models.bundled import RANDOM_WEIGHTS, weights_provenance
from napari_neuroseg.models.checkpoint import read_sidecar
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.spec import ModelSpec

__all__ = ["ModelSource", "ModelSourceError"]


class ModelSourceError(ValueError):
    """A model that cannot be run (unknown name, no weights); the message says why."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model run's weights come from; cheap to copy and to send to workers.

    Parameters
    ----------
    model : str
        A checkpoint path (``.safetensors`` with its ``.json`` sidecar) or a registry name;
        a registry name runs the weights that ship with the package when there are some.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    random_weights : bool
        Allow a registry model without shipped weights to run with random weights (for
        trying the pipeline; its outputs mean nothing and the summary says so).
    batch_size : int
    backend : str
        Inference backend (``"auto"``, ``"torch"``, ``"onnxruntime"``, ``"openvino"``...;
        see :mod:`napari_neuroseg.models.backends`).
    """

    model: str
    device: str = "auto"
    random_weights: bool = False
    batch_size: int = 8
    backend: str = "auto"

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint file: ``model`` itself, or the bundled weights of a registry name.

        Resolved where it is asked (a dask worker finds its own installed package's file).
        """
        path = Path(self.model)
        if path.suffix in (".safetensors", ".json") or path.with_suffix(".json").is_file():
            return path
        registry = ModelRegistry()
        return registry.checkpoint(self.model) if self.model in registry else None

    def weights(self) -> str:
        """Which weights run, in one line: the file and where they come from, or random."""
        ckpt = self.checkpoint
        if ckpt is None:
            return f"{self.model}: {RANDOM_WEIGHTS}; outputs mean nothing"
        spec = ModelSpec.from_dict(read_sidecar(ckpt)["spec"])
        registry = ModelRegistry()
        bundled = spec.name in registry and registry.checkpoint(spec.name) == ckpt
        return f"{spec.name}: weights {ckpt} ({weights_provenance(spec, ckpt, bundled=bundled)})"

    def spec(self) -> ModelSpec:
        """The model's spec (from the checkpoint's sidecar or the registry)."""
        if self.checkpoint is not None:
            return ModelSpec.from_dict(read_sidecar(self.checkpoint)["spec"])
        registry = ModelRegistry()
        if self.model not in registry.names():
            raise ModelSourceError(f"unknown model {self.model!r}: give a checkpoint file or "
                                   f"one of {', '.join(registry.names())}")
        if not self.random_weights:
            raise ModelSourceError(f"{self.model} ships no trained weights: give a checkpoint "
                                   "(--model path/to/model.safetensors) or --random-weights "
                                   "to try the pipeline with meaningless outputs")
        return registry.get(self.model)

    def key(self) -> str:
        """Identifies the weights (for the tile cache): the checkpoint hash or the seed."""
        if self.checkpoint is not None:
            sidecar = read_sidecar(self.checkpoint)
            return f"{sidecar['spec']['name']}:{sidecar.get('weights_sha256', '')[:16]}"
        return f"{self.model}:random-seed0"

    def runner(self) -> ModelRunner:
        """Load the model (in the process that runs the task)."""
        if self.checkpoint is not None:
            return ModelRunner.from_checkpoint(self.checkpoint, device=self.device,
                                               batch_size=self.batch_size,
                                               backend=self.backend)
        return ModelRunner.from_spec(self.spec(), device=self.device,
                                     batch_size=self.batch_size, backend=self.backend)
