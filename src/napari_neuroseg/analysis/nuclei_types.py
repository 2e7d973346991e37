"""Nucleus types from HoVer-Net's type branch: per instance, per pixel, and their colours.

A HoVer-Net trained with types (``arch_kwargs["n_types"]``) outputs, after the nuclear
probabilities and h/v maps, ``T`` type probabilities; the spec names them in
``extra["type_classes"]`` (index 0 is the background). A model without a type branch, or a
spec without type names, has no types: the functions here then return nothing rather than
invent any.

* :func:`type_names_of`: the type names of a spec and its outputs (empty without types);
* :func:`classify_nuclei`: ``{instance id: type id}`` by majority vote
  (:func:`~napari_neuroseg.models.hovernet_post.instance_types`);
* :func:`type_image`: the labels painted with their type ids (for a layer coloured by type);
* :func:`pixel_types`: the nuclear type of each pixel (for summaries without instances);
* :func:`type_colors`: one fixed ``#rrggbb`` colour per type id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_neuroseg.analysis.slide import AnalysisError
from napari_neuroseg.models.hovernet_post import instance_types
from napari_neuroseg.models.spec import ModelSpec

__all__ = [
    "N_HOVER_MAPS",
    "TYPE_PALETTE",
    "classify_nuclei",
    "pixel_types",
    "type_colors",
    "type_image",
    "type_names_of",
]

#: Outputs before the type probabilities: nuclear background / foreground, h, v.
N_HOVER_MAPS = 4
#: Colours of types 1, 2, ... (type 0, the background, is black and drawn transparent):
#: matplotlib's tab10 without its grey, so neighbouring types differ.
TYPE_PALETTE = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#bcbd22", "#17becf")


def type_names_of(spec: ModelSpec, n_outputs: int) -> tuple[str, ...]:
    """The type names of ``spec`` when its outputs carry type probabilities, else ``()``.

    Parameters
    ----------
    spec : ModelSpec
        An instance-segmentation spec; ``extra["type_classes"]`` names the types.
    n_outputs : int
        Channels the model gave (4 without a type branch, 4 + T with one).

    Raises
    ------
    AnalysisError
        The model gave type probabilities for another number of types than its spec names.
    """
    names = tuple(str(name) for name in (spec.extra.get("type_classes") or ()))
    n_types = n_outputs - N_HOVER_MAPS
    if not names or n_types <= 0:
        return ()
    if n_types != len(names):
        raise AnalysisError(f"{spec.name}: {n_types} type probabilities but {len(names)} "
                            f"type classes in its spec ({', '.join(names)})")
    return names


def classify_nuclei(labels: np.ndarray, type_probs: np.ndarray) -> dict[int, int]:
    """``{instance id: type id}``: the type most of a nucleus's pixels vote for.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (H, W)
        Instance labels, 0 background.
    type_probs : numpy.ndarray, shape (T, H, W)
        Type probabilities (type 0 the background).

    Returns
    -------
    dict
        One entry per instance; type 0 only where no pixel of the nucleus votes for a
        nuclear type.
    """
    if not np.any(labels):
        return {}
    return instance_types(labels, type_probs)


def type_image(labels: np.ndarray, types: Mapping[int, int]) -> np.ndarray:
    """``labels`` with each instance id replaced by its type id (uint8, 0 background).

    Instances without an entry in ``types`` become 0.
    """
    labels = np.asarray(labels)
    size = max(int(labels.max()) if labels.size else 0, max(types, default=0)) + 1
    lut = np.zeros(size, np.uint8)
    for instance, type_id in types.items():
        lut[int(instance)] = int(type_id)
    return lut[labels]


def pixel_types(type_probs: np.ndarray) -> np.ndarray:
    """The most probable nuclear type of every pixel: ``1 + argmax(type_probs[1:])``, uint8.

    The background type is left out, so that inside a nuclear mask every pixel has a
    nuclear type and the type areas add up to the nuclear area.
    """
    probs = np.asarray(type_probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"type probabilities should be (T >= 2, H, W), got {probs.shape}")
    return (probs[1:].argmax(axis=0) + 1).astype(np.uint8)


def type_colors(type_names: Sequence[str]) -> tuple[str, ...]:
    """One ``#rrggbb`` colour per type id: black for the background, then
    :data:`TYPE_PALETTE` (repeated past its end)."""
    return ("#000000", *(TYPE_PALETTE[i % len(TYPE_PALETTE)]
                         for i in range(max(0, len(type_names) - 1))))
