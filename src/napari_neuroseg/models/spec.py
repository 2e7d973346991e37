"""Models described by data: what a model computes, on what input, with which classes.

A :class:`ModelSpec` is plain data (JSON round-trips through :meth:`ModelSpec.to_dict` /
:meth:`ModelSpec.from_dict`). It is stored in every checkpoint's sidecar, so a checkpoint
says by itself how to build its network, prepare its input and read its output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TaskKind = Literal[
    "semantic_segmentation",
    "instance_segmentation",
    "tile_classification",
    "slice_classification",
    "image_translation",
]
OutputKind = Literal["probabilities", "logit", "instances", "image"]
TASK_KINDS: tuple[str, ...] = TaskKind.__args__  # type: ignore[attr-defined]
OUTPUT_KINDS: tuple[str, ...] = OutputKind.__args__  # type: ignore[attr-defined]


class SpecError(ValueError):
    """A model spec or checkpoint sidecar that is inconsistent; the message says what."""


@dataclass(frozen=True)
class InputSpec:
    """What a model expects to be fed.

    Parameters
    ----------
    channels : tuple of str
        Meaning of each input channel, e.g. ``("R", "G", "B")``, ``("FLAIR",)``, ``("HU",)``.
    normalization : dict
        ``{"kind": "range", "scale": 255.0}``, ``{"kind": "zscore"}`` (per image),
        ``{"kind": "mean_std", "mean": [...], "std": [...]}`` or
        ``{"kind": "ct_window", "center": 40, "width": 80}``.
    patch_size : tuple of int
        (height, width) of one network input, halo included.
    halo : int
        Pixels on each side of a patch that are context only (cropped from the output).
    resolution : float or None
        Working pixel size: µm/px for slides, in-plane mm for CT and MRI; ``None`` = native.
    resolution_unit : str
        ``"um"`` or ``"mm"``.
    preprocessing : tuple of str
        Named steps the engine runs before normalisation, in order: ``"macenko"``,
        ``"tissue_mask"``, ``"ct_window"``, ``"brain_extraction"``, ``"zscore"``.
    """

    channels: tuple[str, ...]
    normalization: dict[str, Any]
    patch_size: tuple[int, int]
    halo: int = 0
    resolution: float | None = None
    resolution_unit: str = "um"
    preprocessing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.channels:
            raise SpecError("an input needs at least one channel")
        if len(self.patch_size) != 2 or min(self.patch_size) <= 2 * self.halo:
            raise SpecError(f"patch_size {self.patch_size} must exceed twice the halo {self.halo}")
        if "kind" not in self.normalization:
            raise SpecError("normalization needs a 'kind'")


@dataclass(frozen=True)
class ModelSpec:
    """One model, fully described by data.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"lgg-tissue"``.
    task : str
        One of :data:`TASK_KINDS`.
    architecture : str
        Architecture key in :data:`napari_neuroseg.models.registry.ARCHITECTURES`.
    arch_kwargs : dict
        Keyword arguments of the architecture's constructor.
    input : InputSpec
    classes : tuple of str
        Class names, index = class id (background first for segmentation).
    colors : tuple of str
        One ``#rrggbb`` colour per class.
    output : str
        One of :data:`OUTPUT_KINDS`.
    threshold : float
        Default decision threshold (binary outputs and patient-level decisions).
    description : str
        One paragraph for people: what it does, what it was trained on.
    synthetic : bool
        True when the weights were trained on synthetic data: the UI and docs say so.
    extra : dict
        Anything task-specific (e.g. the 8 source classes of a transferred head).
    """

    name: str
    task: str
    architecture: str
    arch_kwargs: dict[str, Any]
    input: InputSpec
    classes: tuple[str, ...]
    colors: tuple[str, ...]
    output: str
    threshold: float = 0.5
    description: str = ""
    synthetic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS:
            raise SpecError(f"{self.name}: unknown task {self.task!r} (one of {TASK_KINDS})")
        if self.output not in OUTPUT_KINDS:
            raise SpecError(f"{self.name}: unknown output {self.output!r} (one of {OUTPUT_KINDS})")
        if len(self.colors) != len(self.classes):
            raise SpecError(
                f"{self.name}: {len(self.classes)} classes but {len(self.colors)} colours"
            )

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; raises :class:`SpecError` on missing or bad fields."""
        try:
            raw = dict(data)
            inp = dict(raw.pop("input"))
            inp["channels"] = tuple(inp["channels"])
            inp["patch_size"] = tuple(inp["patch_size"])
            inp["preprocessing"] = tuple(inp.get("preprocessing", ()))
            return cls(
                input=InputSpec(**inp),
                classes=tuple(raw.pop("classes")),
                colors=tuple(raw.pop("colors")),
                **raw,
            )
        except (KeyError, TypeError) as err:
            raise SpecError(f"incomplete model spec: {err}") from err
