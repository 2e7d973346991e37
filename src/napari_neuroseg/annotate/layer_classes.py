"""What a result's labels mean, from the metadata the plugin writes on its layers.

A result layer records the model that made it (``metadata["neuroseg"]["model"]``) and, for
the analysis widgets, which widget (``result_of``); a label store's layers carry their class
map. From that alone the Annotate widget picks the palette and the Export widget the task,
so that a Nuclei result is never recoloured with tissue classes nor exported as tissue.
Plain data in, plain data out: the widgets read the metadata dict off the layer.
"""

from collections.abc import Mapping
from typing import Any

from napari_neuroseg.annotate.palette import ClassMap, standard_class_map

__all__ = [
    "NUCLEI_MAP",  # noqa: F822 (made on first use by __getattr__: it loads the model registry)
    "class_map_of_metadata",
    "export_task_of_metadata",
    "model_spec",
]

NUCLEI_TITLE = "nuclei (instances)"  # the standard map of instance labels (nuclei)
NUCLEI_WIDGET = "Nuclei"  # ``result_of`` of the Nuclei widget's result layers

# The export task of each model task (a semantic model exports by its resolution unit).
_TASK_OF_MODEL_TASK = {"instance_segmentation": "nuclei", "tile_classification": "nuclei-tiles",
                       "slice_classification": "ct"}


def model_spec(name: Any) -> Any:
    """The registered spec of model ``name``, or None (no name, or a model not registered,
    e.g. a checkpoint trained by the user)."""
    if not name:
        return None
    from napari_neuroseg.models.registry import (  # loads torch: only when a layer asks
        ModelRegistry,
        RegistryError,
    )

    try:
        return ModelRegistry().get(str(name))
    except RegistryError:
        return None


def _is_instances(meta: Mapping[str, Any], spec: Any) -> bool:
    if meta.get("result_of") == NUCLEI_WIDGET:
        return True
    if (meta.get("class_map") or {}).get("kind") == "instance":
        return True
    return spec is not None and spec.task == "instance_segmentation"


def class_map_of_metadata(meta: Mapping[str, Any]) -> ClassMap | None:
    """The class map a layer's labels are in, or None when its metadata does not say.

    Parameters
    ----------
    meta : mapping
        The layer's ``metadata["neuroseg"]``.

    Returns
    -------
    ClassMap or None
        A label store's layer: the store's map. A result: its model's classes (an instance
        model, or the Nuclei widget's result: instance labels). Otherwise None.
    """
    if meta.get("label_store") and meta.get("class_map"):
        try:
            return ClassMap.from_dict(meta["class_map"])
        except ValueError:
            return None
    spec = model_spec(meta.get("model"))
    if _is_instances(meta, spec) and (spec is not None or meta.get("result_of")):
        if spec is not None and spec.task == "instance_segmentation":
            return ClassMap.from_spec(spec)
        return standard_class_map(NUCLEI_TITLE)
    if spec is not None and spec.task == "semantic_segmentation":
        return ClassMap.from_spec(spec)
    return None


def export_task_of_metadata(meta: Mapping[str, Any]) -> str | None:
    """The export task of a layer's labels (``"nuclei"``, ``"tissue"``, ``"mri"``...), or
    None when its metadata does not say.

    Instance labels (a Nuclei result, an instance model's labels, a layer painted with an
    instance class map) export as ``"nuclei"``; a semantic model's labels as ``"mri"`` when
    the model works in mm, else ``"tissue"``.
    """
    spec = model_spec(meta.get("model"))
    if _is_instances(meta, spec):
        return "nuclei"
    if spec is None:
        return None
    if spec.task in _TASK_OF_MODEL_TASK:
        return _TASK_OF_MODEL_TASK[spec.task]
    if spec.task == "semantic_segmentation":
        return "mri" if getattr(spec.input, "resolution_unit", "") == "mm" else "tissue"
    return None


def __getattr__(name: str) -> Any:
    """``NUCLEI_MAP``: the class map of instance labels (one object class, any id > 0 is one
    nucleus), the standard map of ``nuclei-hovernet``, made on first use."""
    if name == "NUCLEI_MAP":
        return standard_class_map(NUCLEI_TITLE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
