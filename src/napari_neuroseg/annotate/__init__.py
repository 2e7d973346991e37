"""Annotate: correct results, export them as training data, exchange them with QuPath.

Pure logic under the widgets (no napari, no Qt). The modules are imported by their paths, so
importing one (``trainjob`` for a light subprocess helper) does not load the others:

- :mod:`~napari_neuroseg.annotate.palette`: class maps (names, colours, napari tables);
- :mod:`~napari_neuroseg.annotate.labelstore`: the tile-sparse label store of a slide;
- :mod:`~napari_neuroseg.annotate.instances`: delete, merge, split, add instances;
- :mod:`~napari_neuroseg.annotate.export_plan`, :mod:`~napari_neuroseg.annotate.export`,
  :mod:`~napari_neuroseg.annotate.geojson`: dataset items from labels, the dataset export,
  and QuPath GeoJSON (over :mod:`~napari_neuroseg.annotate.pixel_polygons`, which traces a
  mask's pixel boundary and fills a polygon back);
- :mod:`~napari_neuroseg.annotate.trainjob`: ``python -m training`` as a watched process.
"""

__all__: list[str] = []
