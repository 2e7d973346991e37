"""Batch prediction over many slides, CT series and MRI stacks (``python -m napari_neuroseg
predict``), locally or on a dask.distributed cluster.

:func:`predict_inputs` takes the model as a :class:`~napari_neuroseg.models.source.ModelSource`,
re-exported here so that a batch caller needs one import.
"""

from napari_neuroseg.batch.jobs import predict_inputs
from napari_neuroseg.models.source import ModelSource

__all__ = ["ModelSource", "predict_inputs"]
