"""The --scheduler path: region tasks on a real dask.distributed cluster."""

import pytest

from napari_neuroseg.batch import ModelSource, predict_inputs
from napari_neuroseg.io.ome_zarr import read_ome_zarr
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.slide import write_synthetic_slide

from .conftest import SPEC

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_region_tasks_run_on_a_cluster(tmp_path):
    ckpt = save_checkpoint(tmp_path / "toy", ModelRegistry().build(SPEC), SPEC)
    slide = write_synthetic_slide(tmp_path / "slide.tif", size=(512, 768), tile=256, mpp=0.5,
                                  layout="pages", compression="zlib", levels=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        rows = predict_inputs([slide], ModelSource(str(ckpt), device="cpu"), tmp_path / "out",
                              scheduler=cluster.scheduler_address, region_size=128,
                              log=lambda m: None)
    assert [r["status"] for r in rows] == ["ok"]
    labels, _ = read_ome_zarr(
        tmp_path / "out" / "slide" / "prediction.ome.zarr" / "labels" / "segmentation")
    assert labels[0].shape == (256, 384)
