"""Class maps for painting: names, colours, and what napari needs to show them.

A :class:`ClassMap` is plain data: class names (index = label value), one ``#rrggbb`` colour
per class, and whether labels are classes (``semantic``) or instance ids (``instance``, where
every id > 0 is one object of the last class). It turns into the colour dictionary of a napari
``DirectLabelColormap`` and a ``features`` table whose ``class`` column names each label
value in napari's status bar; the widget builds the napari objects from these.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

__all__ = ["STANDARD_CLASS_MAPS", "STANDARD_MAP_MODELS", "ClassMap", "standard_class_map",
           "standard_class_maps"]

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
KINDS = ("semantic", "instance")


def _rgba(color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    value = int(color[1:], 16)
    return ((value >> 16) / 255.0, ((value >> 8) & 255) / 255.0, (value & 255) / 255.0, alpha)


@dataclass(frozen=True)
class ClassMap:
    """What each label value means and how it is drawn.

    Parameters
    ----------
    names : tuple of str
        Class names; index = label value; ``names[0]`` is the background.
    colors : tuple of str
        One ``#rrggbb`` colour per class (the background is drawn transparent).
    title : str
        What the map is called in menus (``"LGG tissue"``, a model name...).
    kind : {"semantic", "instance"}
        ``instance``: a label value is an object id, not a class (nuclei); ``names`` is
        ``("background", "<object>")``.
    resolution : float or None
        The working pixel size annotations are made at (µm/px for slides), when it matters.
    """

    names: tuple[str, ...]
    colors: tuple[str, ...]
    title: str = ""
    kind: str = "semantic"
    resolution: float | None = None

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError(f"a class map needs a background and at least one class, "
                             f"got {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"class names must be unique, got {list(self.names)}")
        if len(self.colors) != len(self.names):
            raise ValueError(f"{len(self.names)} classes but {len(self.colors)} colours")
        bad = [c for c in self.colors if not _HEX.match(str(c))]
        if bad:
            raise ValueError(f"colours must be '#rrggbb', got {bad}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Any) -> ClassMap:
        """The class map of a :class:`~napari_neuroseg.models.spec.ModelSpec` (or alike).

        Instance models (``task == "instance_segmentation"``) give an ``instance`` map.
        """
        kind = "instance" if getattr(spec, "task", "") == "instance_segmentation" else "semantic"
        resolution = getattr(getattr(spec, "input", None), "resolution", None)
        return cls(tuple(spec.classes), tuple(spec.colors), title=str(spec.name), kind=kind,
                   resolution=resolution)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMap:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(tuple(data["names"]), tuple(data["colors"]), title=data.get("title", ""),
                       kind=data.get("kind", "semantic"), resolution=data.get("resolution"))
        except KeyError as err:
            raise ValueError(f"a class map needs {err.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"names": list(self.names), "colors": list(self.colors), "title": self.title,
                "kind": self.kind, "resolution": self.resolution}

    # -- queries ----------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.names)

    @property
    def dtype(self) -> str:
        """The label dtype: ``uint8`` for up to 256 classes, ``uint32`` for instances."""
        return "uint32" if self.kind == "instance" or self.n_classes > 256 else "uint8"

    def id_of(self, name: str) -> int:
        """The label value of class ``name``; ValueError naming the classes otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no class {name!r} in {self.title or 'the class map'} "
                             f"(classes: {', '.join(self.names)})") from None

    def class_map(self) -> dict[int, str]:
        """``{id: name}`` as :class:`~napari_neuroseg.dataset.DatasetWriter` takes it."""
        return dict(enumerate(self.names))

    def rgba(self) -> list[tuple[float, float, float, float]]:
        """RGBA in [0, 1] per class; the background fully transparent."""
        return [_rgba(c, 0.0 if i == 0 else 1.0) for i, c in enumerate(self.colors)]

    def color_dict(self) -> dict[int | None, tuple[float, float, float, float]] | None:
        """``color_dict`` of a napari ``DirectLabelColormap`` (None for instance maps).

        Keys are label values, plus ``None`` (any other value) drawn transparent. Instance
        maps return None: napari's cyclic colormap already tells neighbouring ids apart.
        """
        if self.kind == "instance":
            return None
        colors: dict[int | None, tuple[float, float, float, float]] = dict(
            enumerate(self.rgba()))
        colors[None] = (0.0, 0.0, 0.0, 0.0)
        return colors

    def features(self) -> dict[str, list[Any]] | None:
        """A napari ``features`` table: ``index`` (label value) and ``class`` (its name).

        napari's status bar shows the ``class`` of the label under the cursor. None for
        instance maps (one row per object id would be needed).
        """
        if self.kind == "instance":
            return None
        return {"index": list(range(self.n_classes)), "class": list(self.names)}

    def label_name(self, value: int) -> str:
        """The name of label ``value`` (``"nucleus 12"`` for instance maps)."""
        if self.kind == "instance":
            return self.names[0] if value == 0 else f"{self.names[-1]} {value}"
        return self.names[value] if 0 <= value < self.n_classes else f"unknown {value}"


#: The standard maps by title, and the declared model (``models/_default_specs.py``) each one
#: is: its classes, colours, kind and working resolution, so that a map cannot drift from its
#: model (the LGG tissue map annotates at the tissue models' working µm/px). A trained
#: checkpoint's own map (its recorded resolution) is the ``model: <name>`` choice of the
#: Annotate widget.
STANDARD_MAP_MODELS: Mapping[str, str] = MappingProxyType({
    "LGG tissue (4 classes)": "lgg-tissue",
    "MRI FLAIR abnormality": "mri-flair-unet",
    "nuclei (instances)": "nuclei-hovernet",
    "CT metastasis": "ct-metastasis",
})


def standard_class_maps() -> Mapping[str, ClassMap]:
    """The standard class maps by title, made from the declared specs of their models.

    The model registry loads torch, so it is imported on the first call, not with this
    module (a label store or an export plan needs no model). :data:`STANDARD_CLASS_MAPS`
    gives the same maps, made on look-up.

    Returns
    -------
    Mapping of str to ClassMap
        Read-only, in :data:`STANDARD_MAP_MODELS` order.
    """
    from napari_neuroseg.models.registry import DEFAULT_SPECS

    return MappingProxyType({
        title: replace(ClassMap.from_spec(DEFAULT_SPECS[model]), title=title)
        for title, model in STANDARD_MAP_MODELS.items()})


def standard_class_map(title: str) -> ClassMap:
    """One of the standard class maps by title (ValueError listing them otherwise)."""
    maps = standard_class_maps()
    try:
        return maps[title]
    except KeyError:
        raise ValueError(f"no standard class map {title!r} "
                         f"(choose from {', '.join(maps)})") from None


class _StandardClassMaps(Mapping[str, ClassMap]):
    """:func:`standard_class_maps` as a mapping that imports the model registry on use."""

    def __getitem__(self, title: str) -> ClassMap:
        return standard_class_maps()[title]

    def __iter__(self) -> Iterator[str]:
        return iter(STANDARD_MAP_MODELS)

    def __len__(self) -> int:
        return len(STANDARD_MAP_MODELS)

    def __repr__(self) -> str:
        return f"STANDARD_CLASS_MAPS({list(STANDARD_MAP_MODELS)})"


STANDARD_CLASS_MAPS: Mapping[str, ClassMap] = _StandardClassMaps()
"""The standard class maps by title (:func:`standard_class_maps`, made on look-up: the model
registry is imported on the first one)."""
