"""The Export widget's QuPath GeoJSON exchange: write a labels layer, read one back.

The conversion itself is :mod:`napari_neuroseg.annotate.geojson`, run in a worker; this
part only reads the widget's settings and adds the imported layer.
"""

from pathlib import Path
from typing import Any

from napari_neuroseg.annotate.export_plan import slide_region
from napari_neuroseg.annotate.geojson import (
    ImportedLabels,
    geojson_to_labels,
    labels_to_geojson,
    write_geojson,
)
from napari_neuroseg.io import LazyImage
from napari_neuroseg.io.layers import image_from_layer
from napari_neuroseg.widgets._export_job import format_class_map, parse_class_text
from napari_neuroseg.widgets._workers import start_worker

__all__ = ["GEOJSON_MAX_SIDE", "GeoJSONExchange", "level_grid"]

GEOJSON_MAX_SIDE = 4096  # importing without a labels layer: the finest level this small


class GeoJSONExchange:
    """GeoJSON export and import for :class:`~napari_neuroseg.widgets.export_widget.ExportWidget`.

    A mixin: the widget provides ``_viewer``, ``labels_layer``, ``image_layer``, ``classes``,
    ``task``, ``geojson_file``, ``status``, ``_labels_data()`` and ``_fail(err)``.
    """

    _viewer: Any
    labels_layer: Any
    image_layer: Any
    classes: Any
    task: Any
    geojson_file: Any
    status: Any
    last_import: ImportedLabels | None

    def export_geojson(self) -> None:
        """Write the labels layer as QuPath GeoJSON (level-0 pixel coordinates)."""
        try:
            layer, path = self.labels_layer.value, str(self.geojson_file.value)
            if layer is None or self.image_layer.value is None:
                raise ValueError("choose the labels layer and the slide it belongs to")
            if not path or path == ".":
                raise ValueError("choose a GeoJSON file to write")
            labels, _, _ = self._labels_data()
            if isinstance(labels, str):
                raise ValueError("GeoJSON export works on a labels layer, not a label store")
            region = slide_region(image_from_layer(self.image_layer.value), layer.scale,
                                  layer.translate)
            downsample, offset = region.downsample, region.offset
            classes = parse_class_text(self.classes.value)
            instances = self.task.value in ("nuclei", "nuclei-tiles")
            colors = {k: tuple(layer.get_color(k)[:3]) for k in classes
                      if k and layer.get_color(k) is not None}
        except ValueError as err:
            self._fail(err)
            return

        def work() -> Path:
            data = labels_to_geojson(labels, classes, offset=offset, downsample=downsample,
                                     instances=instances, colors=colors)
            return write_geojson(path, data)

        self.status.value = "Writing GeoJSON ..."
        start_worker(work, on_done=lambda p: setattr(self.status, "value", f"Wrote {p}"),
                     on_error=self._fail)

    def import_geojson(self) -> None:
        """Rasterise a QuPath GeoJSON file into a new labels layer (unknown classes added)."""
        try:
            path = str(self.geojson_file.value)
            if not Path(path).is_file():
                raise ValueError(f"{path}: choose an existing GeoJSON file")
            if self.image_layer.value is None:
                raise ValueError("choose the slide the annotations belong to")
            image = image_from_layer(self.image_layer.value)
            layer = self.labels_layer.value
            if layer is not None and not getattr(layer, "multiscale", False):
                shape = layer.data.shape[-2:]
                scale, translate = tuple(layer.scale), tuple(layer.translate)
            else:
                shape, scale, translate = level_grid(image)
            region = slide_region(image, scale, translate)
            classes = parse_class_text(self.classes.value)
            instances = self.task.value in ("nuclei", "nuclei-tiles")
        except ValueError as err:
            self._fail(err)
            return

        def work() -> ImportedLabels:
            return geojson_to_labels(path, shape, classes, offset=region.offset,
                                     downsample=region.downsample, instances=instances,
                                     unknown="add")

        def done(result: ImportedLabels) -> None:
            self.last_import = result
            names = list(result.class_map.values())
            new = self._viewer.add_labels(
                result.labels, name=f"{Path(path).stem} (GeoJSON)", scale=scale,
                translate=translate, opacity=0.5,
                features=None if instances else {"index": list(result.class_map),
                                                 "class": names},
                metadata={"neuroseg": {"classes": names, "source": image.source}})
            self.labels_layer.value = new
            if result.added:
                self.classes.value = format_class_map(result.class_map)
            self.status.value = (f"Imported {result.features} feature(s)"
                                 + (f", skipped {result.skipped}" if result.skipped else "")
                                 + (f"; new classes {result.added}" if result.added else ""))

        self.status.value = "Reading GeoJSON ..."
        start_worker(work, on_done=done, on_error=self._fail)


def level_grid(image: LazyImage) -> tuple[tuple[int, int], tuple[float, float],
                                           tuple[float, float]]:
    """Shape, scale and translate of the finest level with both sides <= GEOJSON_MAX_SIDE."""
    downsamples = image.downsamples()
    for level, array in enumerate(image.levels):
        if max(array.shape[:2]) <= GEOJSON_MAX_SIDE or level == len(image.levels) - 1:
            base = float(image.scale[-1])
            mpp = base * downsamples[level]
            t0 = tuple(image.translate or (0.0, 0.0))[-2:]
            shift = (mpp - base) / 2
            return ((int(array.shape[0]), int(array.shape[1])), (mpp, mpp),
                    (t0[0] + shift, t0[1] + shift))
    raise ValueError("the slide has no levels")
