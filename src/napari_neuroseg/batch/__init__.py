"""Batch prediction over many slides, CT series and MRI stacks (``python -m napari_neuroseg
predict``), locally or on a dask.distributed cluster."""

from napari_neuroseg.batch.jobs import ModelSource, predict_inputs

__all__ = ["ModelSource", "predict_inputs"]
