"""The model picker every analysis widget docks: a registry model or a checkpoint file, and
the device to run it on."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label

from napari_neuroseg.models.bundled import SYNTHETIC_WEIGHTS, weights_provenance
from napari_neuroseg.models.registry import PREFERRED_MODELS, ModelRegistry
from napari_neuroseg.models.source import ModelSource

__all__ = ["FROM_FILE", "ModelPicker", "device_choices"]

#: The model drop-down's entry that runs a checkpoint file.
FROM_FILE = "checkpoint file..."


def device_choices() -> list[str]:
    """``auto`` and ``cpu``, plus ``cuda`` when a GPU is visible."""
    import torch

    return ["auto", "cpu", *(["cuda"] if torch.cuda.is_available() else [])]


class ModelPicker(Container):
    """A registry model (filtered by task) or a checkpoint file, and the device to run it on.

    At first the picker chooses the first of ``preferred`` that is offered and ships trained
    weights, else the first model offered that ships trained weights (random weights only
    when none does). A registry model runs the weights that ship with the package when
    there are some, else random weights; ``provenance`` (a label under the model) says
    which, and ``warning`` says what the user must know (random or synthetic-data weights).

    Parameters
    ----------
    tasks : sequence of str
        Spec tasks offered (``semantic_segmentation``, ``slice_classification``...).
    names : sequence of str, optional
        Restrict to these registry names.
    registry : ModelRegistry, optional
        Where the models and their bundled checkpoints come from (default: a new one).
    preferred : sequence of str, optional
        Registry names to choose first, in order (default:
        :data:`~napari_neuroseg.models.PREFERRED_MODELS`, the declared models that
        cross-validated best).
    """

    def __init__(self, tasks: Sequence[str], names: Sequence[str] | None = None,
                 registry: ModelRegistry | None = None,
                 preferred: Sequence[str] = PREFERRED_MODELS) -> None:
        super().__init__(labels=True)
        self.registry = registry if registry is not None else ModelRegistry()
        self.tasks = tuple(tasks)
        choices = [n for n in self.registry.names() if self.registry.get(n).task in tasks
                   and (names is None or n in names)]
        trained = [n for n in choices if self.registry.checkpoint(n) is not None]
        first = [n for n in preferred if n in trained] + trained
        self.model = ComboBox(label="Model", choices=[*choices, FROM_FILE],
                              value=(first or choices or [FROM_FILE])[0])
        self.provenance = Label(label="Weights", value="")
        self.file = FileEdit(label="Checkpoint", mode="r", filter="*.safetensors", visible=False)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.amp = CheckBox(text="Mixed precision on GPU", value=True)
        self.extend([self.model, self.provenance, self.file, self.device, self.amp])
        self.model.changed.connect(self._model_changed)
        self.file.changed.connect(self._show_provenance)
        self._model_changed(self.model.value)

    def _model_changed(self, value: str) -> None:
        self.file.visible = value == FROM_FILE
        self._show_provenance()

    def _show_provenance(self, *_: Any) -> None:
        self.provenance.value = self.weights_provenance()

    def checkpoint(self) -> Path | None:
        """The weights file that runs: the chosen file or the model's bundled checkpoint."""
        if self.model.value == FROM_FILE:
            path = Path(self.file.value)
            return path if path.is_file() else None
        return self.registry.checkpoint(self.model.value)

    def weights_provenance(self) -> str:
        """Where the chosen weights come from (the ``provenance`` label's text)."""
        from napari_neuroseg.models.checkpoint import read_spec

        if self.model.value != FROM_FILE:
            return self.registry.provenance(self.model.value)
        path = self.checkpoint()
        if path is None:
            return "choose a checkpoint file (.safetensors + .json)"
        try:
            return weights_provenance(read_spec(path), path)
        except (OSError, ValueError) as err:
            return f"unreadable checkpoint: {err}"

    def source(self) -> ModelSource:
        """What is chosen, as a :class:`ModelSource`: a checkpoint file, a model's bundled
        checkpoint, or (a registry model without one) random weights."""
        if self.model.value == FROM_FILE:
            path = Path(self.file.value)
            if not path.is_file():
                raise ValueError(f"{path}: choose a checkpoint file (.safetensors + .json)")
            return ModelSource(str(path), device=self.device.value)
        bundled = self.registry.checkpoint(self.model.value)
        if bundled is not None:
            return ModelSource(str(bundled), device=self.device.value)
        return ModelSource(self.model.value, device=self.device.value, random_weights=True)

    def use_checkpoint(self, path: str | Path) -> bool:
        """Choose checkpoint ``path`` if its model does this picker's task; True when chosen.

        The Train widget hands every new checkpoint to the docked widgets through this, so a
        live analysis switches to the retrained model (its settings change starts a new
        session).
        """
        from napari_neuroseg.models.checkpoint import read_sidecar

        try:
            task = read_sidecar(path)["spec"]["task"]
        except (OSError, ValueError, KeyError):
            return False
        if task not in self.tasks:
            return False
        self.model.value = FROM_FILE
        self.file.value = Path(path)
        return True

    @property
    def random_weights(self) -> bool:
        """Whether the choice runs random weights (a registry model that ships none)."""
        return self.model.value != FROM_FILE and self.registry.checkpoint(self.model.value) is None

    @property
    def warning(self) -> str:
        """What the user must know about the chosen weights ("" for trained, real-data ones):
        random weights (a registry model that ships none) or weights trained on synthetic
        data."""
        name = self.model.value
        if self.random_weights:
            return (f"{name}: no trained weights ship with it, running with random weights "
                    "(outputs mean nothing; choose a checkpoint file)")
        if self.weights_provenance() == SYNTHETIC_WEIGHTS:
            label = Path(self.file.value).name if name == FROM_FILE else name
            return f"{label}: {SYNTHETIC_WEIGHTS}"
        return ""
