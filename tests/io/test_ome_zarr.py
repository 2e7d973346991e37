import dask.array as da
import numpy as np
import pytest

from napari_neuroseg.io.ome_zarr import read_ome_zarr, write_ome_zarr
from napari_neuroseg.io.writers import WriterError


def test_labels_pyramid_round_trips_with_physical_scale(tmp_path):
    labels = np.zeros((700, 900), dtype=np.uint8)
    labels[100:400, 200:600] = 3
    out = write_ome_zarr(tmp_path / "labels.zarr", da.from_array(labels, chunks=256),
                         kind="labels", scale=(0.5, 0.5), unit="um")
    levels, attrs = read_ome_zarr(out)
    assert [lvl.shape for lvl in levels] == [(700, 900), (350, 450), (175, 225)]
    np.testing.assert_array_equal(levels[0].compute(), labels)
    np.testing.assert_array_equal(levels[1].compute(), labels[::2, ::2])  # ids stay ids
    ms = attrs["multiscales"][0]
    assert ms["axes"][0] == {"name": "y", "type": "space", "unit": "micrometer"}
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [2.0, 2.0]
    assert "image-label" in attrs


def test_probabilities_are_averaged_per_channel(tmp_path):
    probs = np.random.default_rng(0).random((2, 512, 300)).astype(np.float32)
    out = write_ome_zarr(tmp_path / "p.zarr", probs, axes="cyx", channel_names=["bg", "tumour"])
    levels, attrs = read_ome_zarr(out)
    expected = probs.reshape(2, 256, 2, 150, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(levels[1].compute(), expected, atol=1e-6)
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["bg", "tumour"]


def test_failed_write_leaves_the_previous_result(tmp_path):
    target = tmp_path / "r.zarr"
    write_ome_zarr(target, np.ones((64, 64), np.uint8), kind="labels")

    def boom(block):
        raise RuntimeError("disk full")

    bad = da.zeros((600, 600), dtype=np.uint8, chunks=256).map_blocks(boom, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="disk full"):
        write_ome_zarr(target, bad, kind="labels")
    levels, _ = read_ome_zarr(target)
    assert levels[0].shape == (64, 64) and int(levels[0].sum()) == 64 * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def test_bad_axes_are_refused(tmp_path):
    with pytest.raises(WriterError, match="axes"):
        write_ome_zarr(tmp_path / "x.zarr", np.zeros((2, 3, 4, 5)), axes="zcyx")
    with pytest.raises(WriterError, match="dimensions"):
        write_ome_zarr(tmp_path / "x.zarr", np.zeros((4, 5)), axes="cyx")
