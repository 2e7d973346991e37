"""What the Export widget computes outside Qt: class-map text, a layer's class map, the
image record of a layer, and the export itself (run in a worker).

:class:`~napari_neuroseg.widgets.export_widget.ExportWidget` reads its settings and calls
these; they take napari layers by duck typing and import no Qt.
"""

from collections.abc import Callable
from typing import Any

from napari_neuroseg.annotate.export import ExportReport, export_items
from napari_neuroseg.annotate.export_plan import (
    label_store_items,
    nuclei_tile_items,
    slide_items,
    slide_region,
    volume_items,
)
from napari_neuroseg.annotate.layer_classes import class_map_of_metadata
from napari_neuroseg.dataset.manifest import DatasetError, parse_class_map
from napari_neuroseg.dataset.tasks import NUCLEI_CLASSES
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import channel_layers, image_from_layer, stack_from_layers

__all__ = ["format_class_map", "image_record", "layer_class_map", "parse_class_text",
           "run_export"]


def parse_class_text(text: str) -> dict[int, str]:
    """``"0: background, 1: tumour"`` (or bare names, ids 0, 1, ...) as a class map.

    Raises
    ------
    DatasetError
        If it is empty or malformed.
    """
    parts = [p.strip() for chunk in text.splitlines() for p in chunk.split(",") if p.strip()]
    if not parts:
        raise DatasetError("the class map is empty: give e.g. '0: background, 1: tumour'")
    out: dict[Any, str] = {}
    for k, part in enumerate(parts):
        key, name = part.split(":", 1) if ":" in part else (str(k), part)
        out[key.strip()] = name.strip()
    return parse_class_map(out, "class map")


def format_class_map(class_map: dict[int, str]) -> str:
    """The inverse of :func:`parse_class_text`."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(class_map.items()))


def layer_class_map(layer: Any) -> dict[int, str] | None:
    """Class names a labels layer carries: what made it (a result's model, a label store),
    else palette metadata, ``classes``, or its features."""
    if layer is None:
        return None
    meta = layer.metadata.get("neuroseg", {})
    own = class_map_of_metadata(meta)
    if own is not None:
        return NUCLEI_CLASSES if own.kind == "instance" else own.class_map()
    names = (meta.get("class_map") or {}).get("names") or meta.get("classes")
    if names:
        if (meta.get("class_map") or {}).get("kind") == "instance":
            return {0: str(names[0]), 1: str(names[-1])}
        return {k: str(n) for k, n in enumerate(names)}
    features = getattr(layer, "features", None)
    if features is not None and "class" in features and len(features):
        index = features["index"] if "index" in features else range(len(features))
        return {int(i): str(n) for i, n in zip(index, features["class"], strict=True)}
    return None


def image_record(layer: Any, layers: Any) -> LazyImage:
    """The :class:`LazyImage` of an image layer; an MR channel brings its sibling channels."""
    meta = layer.metadata.get("neuroseg", {})
    if meta.get("modality") == "MR" and layer.ndim == 3:
        stack = stack_from_layers(channel_layers(layers, layer))
        keep = ("patient_id", "files", "series_uid", "slice_numbers", "absent_slices")
        stack.metadata.update({k: meta[k] for k in keep if k in meta})
        return stack
    return image_from_layer(layer)


def run_export(image: LazyImage, labels: Any, scale: Any, translate: Any, task: str,
               class_map: dict[int, str], folder: str, options: dict[str, Any],
               on_progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Plan, validate and write (runs in a worker). ``labels`` may be a label store path."""
    ids = {"patient_id": options.get("patient_id") or None,
           "corrected_by_person": options.get("corrected", True)}
    if task in ("mri", "ct"):
        items = volume_items(image, task=task, labels=None if task == "ct" else labels,
                             slice_labels=options.get("slice_labels"),
                             patient_label=options.get("patient_label"),
                             series_id=options.get("slide_id") or None, **ids)
    elif isinstance(labels, str):
        from napari_neuroseg.annotate.labelstore import LabelStore

        items = label_store_items(image, LabelStore.open(labels), task=task,
                                  slide_id=options.get("slide_id") or None,
                                  patient_id=ids["patient_id"])
    else:
        region = slide_region(image, scale, translate)
        items = slide_items(image, labels, region, task="nuclei" if "nuclei" in task else task,
                            slide_id=options.get("slide_id") or None, **ids)
    if task == "nuclei-tiles":
        items = [t for item in items for t in nuclei_tile_items(item, options["tile_size"])]
    return export_items(items, folder, task, class_map, on_progress=on_progress)
