"""Several nuclei sources at one working resolution: resampling, balance, type targets."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_neuroseg.dataset import DatasetWriter
from napari_neuroseg.models.registry import ModelRegistry
from training.tasks._common import DataError
from training.tasks.nuclei.sources import (
    MixedCrops,
    RandomMacenko,
    WorkingTiles,
    is_source_folder,
    open_sources,
    resize_labels,
    resize_rgb,
)
from training.tasks.nuclei.targets import IGNORE_TYPE

from .conftest import synthetic_nuclei_tile


def write_source(root, name, mpp, *, typed=False, size=64, radii=(6, 9), n=4):
    """A source of ``n`` synthetic tiles (two patients) at ``mpp``; typed: every nucleus is
    type 1 + id % 2."""
    with DatasetWriter(root / name, "nuclei", "HE", {0: "background", 1: "nucleus"}) as writer:
        for i in range(n):
            image, labels = synthetic_nuclei_tile(100 * len(name) + i, size, 30, radii)
            extra = {"types": {str(k): 1 + int(k) % 2 for k in np.unique(labels[labels > 0])}} \
                if typed else {}
            writer.add(image, labels, patient_id=f"{name}-p{i // 2}", slide_id=f"{name}{i}",
                       mpp=mpp, extra=extra)
    return root / name


@pytest.fixture()
def sources(tmp_path):
    write_source(tmp_path, "forty", 0.25, typed=True, size=96, radii=(8, 12))
    write_source(tmp_path, "twenty", 0.5)
    return tmp_path


def _spec(resolution=0.5):
    spec = ModelRegistry(bundled=False).get("nuclei-hovernet")
    return replace(spec, input=replace(spec.input, resolution=resolution))


def test_resizing_keeps_ids_and_colours():
    labels = np.zeros((8, 8), np.int64)
    labels[:4, :4] = 3
    small = resize_labels(labels, (4, 4))
    assert small.tolist()[0][:2] == [3, 3] and small[3, 3] == 0
    big = resize_labels(small, (8, 8))
    assert np.array_equal(big, labels)
    image = np.full((8, 8, 3), 120, np.uint8)
    assert np.all(resize_rgb(image, (3, 5)) == 120) and resize_rgb(image, (3, 5)).shape == (3, 5, 3)


def test_a_folder_of_datasets_is_opened_as_sources_each_split_by_patient(sources):
    assert is_source_folder(sources) and not is_source_folder(sources / "forty")
    found = open_sources(sources, None, 0.5, 0)
    assert found.names == ("forty", "twenty")
    assert [s.mpp for s in found.sources] == [0.25, 0.5]
    assert [s.typed for s in found.sources] == [True, False]
    for source in found.sources:
        train = {source.data.items[int(i)].patient_id for i in source.train}
        val = {source.data.items[int(i)].patient_id for i in source.val}
        assert train and val and not train & val
    assert len(found.items) == 8
    assert open_sources(sources, ["twenty"], 0.5, 0).names == ("twenty",)
    with pytest.raises(DataError, match="no source dataset"):
        open_sources(sources, ["missing"], 0.5, 0)


def test_a_source_without_a_resolution_is_refused(tmp_path):
    write_source(tmp_path, "unknown", None)
    with pytest.raises(DataError, match="without a µm/px"):
        open_sources(tmp_path, None, 0.5, 0)


def test_crops_are_source_balanced_at_the_working_resolution_with_type_targets(sources):
    found = open_sources(sources, None, 0.5, 0)
    crops = MixedCrops(found.sources, _spec(), crop=32, length=6, scale_jitter=1.0)
    torch.manual_seed(0)
    samples = [crops[i] for i in range(6)]
    for i, (x, targets, instances) in enumerate(samples):
        assert x.shape == (3, 32, 32) and targets["hv"].shape == (2, 32, 32)
        tp = targets["tp"].numpy()
        if i % 2 == 0:  # "forty": typed, nuclei halved in size (radius 8-12 -> 4-6 px)
            assert set(np.unique(tp)) <= {0, 1, 2}
            assert np.array_equal(tp > 0, instances.numpy() > 0)
        else:  # "twenty": no types known anywhere
            assert np.all(tp == IGNORE_TYPE)
    forty = [s[2].numpy() for s in samples[::2]]
    areas = [np.bincount(f.ravel())[1:] for f in forty]
    median = np.median([a for per in areas for a in per if a > 0])
    assert 30 < median < 130  # about pi * 5**2 = 80 px, not pi * 10**2 at 0.25 µm/px


def test_zoom_jitter_changes_the_scale_within_its_bounds(sources):
    found = open_sources(sources, ["twenty"], 0.5, 0)
    crops = MixedCrops(found.sources, _spec(), crop=32, length=40, scale_jitter=1.25)
    torch.manual_seed(1)
    sizes = []
    for i in range(40):
        instances = crops[i][2].numpy()
        counts = np.bincount(instances.ravel())[1:]
        sizes += list(counts[counts > 20])
    assert np.std(sizes) > 0
    with pytest.raises(ValueError, match="scale_jitter"):
        MixedCrops(found.sources, _spec(), crop=32, length=4, scale_jitter=0.9)


def test_validation_tiles_are_whole_and_resampled(sources):
    found = open_sources(sources, None, 0.5, 0)
    tiles = WorkingTiles(found.sources, _spec())
    shapes = [tuple(tiles[i][0].shape[1:]) for i in range(len(tiles))]
    assert [found.names[s] for s in tiles.source_of] == ["forty"] * 2 + ["twenty"] * 2
    assert shapes == [(48, 48)] * 2 + [(64, 64)] * 2


def test_random_macenko_moves_a_tile_towards_another_tiles_stains():
    rng = np.random.default_rng(0)
    pink, _ = synthetic_nuclei_tile(1, 64, 30, (6, 9))
    blue = pink.copy()
    blue[..., 0] = (blue[..., 0] * 0.6).astype(np.uint8)
    macenko = RandomMacenko.from_tiles([blue])
    out, mask = macenko(pink, np.zeros((64, 64), np.int64), rng)
    assert out.shape == pink.shape and out.dtype == np.uint8 and mask is not None
    assert abs(float(out[..., 0].mean()) - blue[..., 0].mean()) < \
        abs(float(pink[..., 0].mean()) - blue[..., 0].mean())
    blank = np.full((16, 16, 3), 255, np.uint8)
    assert np.array_equal(macenko(blank, None, rng)[0], blank)
    with pytest.raises(ValueError):
        RandomMacenko([])
