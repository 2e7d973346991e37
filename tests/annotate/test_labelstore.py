"""The tile-sparse label store: commit, reopen, pyramid, seeding, crash repair, big slides."""

import json
import os

import numpy as np
import psutil
import pytest

from napari_neuroseg.annotate.labelstore import LabelStore
from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS, ClassMap, standard_class_map
from napari_neuroseg.engine import Region
from napari_neuroseg.io.downsample import downsample

LGG = STANDARD_CLASS_MAPS["LGG tissue (4 classes)"]
NUCLEI = STANDARD_CLASS_MAPS["nuclei (instances)"]


def _blob(shape, seed=0, n_classes=4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_classes, size=shape).astype(np.uint8)


@pytest.fixture
def store(tmp_path):
    return LabelStore.create(tmp_path / "s", (1000, 1500), LGG, chunk=128, scale=(2.0, 2.0),
                             translate=(0.5, 0.5), level=1, mpp=2.0,
                             source={"path": "x.tif", "identity": "abc", "sha256": None},
                             min_side=200)


def test_commit_reopen_identical(store):
    a, b = Region(100, 200, 300, 500), Region(250, 450, 600, 700)  # overlapping
    la, lb = _blob(a.shape, 1), _blob(b.shape, 2)
    store.commit(a, la)
    store.commit(b, lb, corrected_by_person=False)
    expected = np.zeros(store.shape, np.uint8)
    expected[a.slices] = la
    expected[b.slices] = lb
    whole = Region(0, 0, *store.shape)
    np.testing.assert_array_equal(store.read(whole), expected)

    again = LabelStore.open(store.directory)
    np.testing.assert_array_equal(again.read(whole), expected)
    assert [r.region for r in again.regions()] == [a, b]
    assert [r.corrected_by_person for r in again.regions()] == [True, False]
    assert again.class_map == LGG and again.shape == (1000, 1500) and again.dtype == np.uint8
    assert (again.scale, again.translate, again.level, again.mpp) == (
        (2.0, 2.0), (0.5, 0.5), 1, 2.0)
    assert again.source["identity"] == "abc" and again.interrupted == []
    # the pyramid agrees with level 0 (most common non-zero label of each 2 x 2 block)
    levels = again.labels_levels()
    assert len(levels) == again.n_levels >= 3
    level = np.zeros(again.level_shapes[0], np.uint8)
    level[:1000, :1500] = expected
    for k, got in enumerate(levels):
        np.testing.assert_array_equal(np.asarray(got), level, err_msg=f"level {k}")
        level = downsample(level, mode="labels")


def test_a_one_pixel_stroke_stays_visible_zoomed_out(store):
    """A thin stroke painted anywhere survives every level (every second pixel lost it)."""
    r = Region(0, 0, 64, 64)
    labels = np.zeros(r.shape, np.uint8)
    labels[:, 33] = 3  # an odd column: not the top-left pixel of any 2 x 2 block
    labels[40, :] = 1
    store.commit(r, labels)
    for k, level in enumerate(store.labels_levels()[1:4], start=1):
        top = np.asarray(level)[: 64 // 2**k, : 64 // 2**k]
        assert (top[:, 33 // 2**k] > 0).all() and (top[40 // 2**k] > 0).all(), k


def test_same_region_twice_is_one_entry(store):
    r = Region(0, 0, 64, 64)
    store.commit(r, np.ones(r.shape, np.uint8), corrected_by_person=False)
    store.commit(r, np.full(r.shape, 2, np.uint8))
    (entry,) = store.regions()
    assert entry.commits == 2 and entry.corrected_by_person
    assert (store.read(r) == 2).all()
    data = json.loads((store.directory / "regions.json").read_text())
    assert data["pending"] is None and len(data["regions"]) == 1


def test_validation(store):
    r = Region(0, 0, 10, 10)
    with pytest.raises(ValueError, match="outside the class map"):
        store.commit(r, np.full(r.shape, 4, np.uint8))
    with pytest.raises(ValueError, match="do not fit region"):
        store.commit(r, np.zeros((9, 10), np.uint8))
    with pytest.raises(ValueError, match="not inside"):
        store.read(Region(990, 0, 1001, 10))
    with pytest.raises(ValueError, match="integers"):
        store.commit(r, np.zeros(r.shape, np.float32))
    assert store.regions() == []
    with pytest.raises(FileExistsError):
        LabelStore.create(store.directory, (10, 10), LGG)
    with pytest.raises(ValueError, match="choose another folder"):
        LabelStore.open_or_create(store.directory, (1000, 1500), NUCLEI)
    assert LabelStore.open_or_create(store.directory, (1000, 1500), LGG).shape == (1000, 1500)


def test_seeded_read_prefers_committed(store):
    seed = np.full(store.shape, 3, np.uint8)
    store.commit(Region(0, 0, 50, 50), np.ones((50, 50), np.uint8))
    got = store.read_seeded(Region(25, 25, 75, 75), seed)
    assert (got[:25, :25] == 1).all()
    assert (got[25:, :] == 3).all() and (got[:, 25:] == 3).all()
    got = store.read_seeded(Region(25, 25, 75, 75), lambda region: np.full(region.shape, 2))
    assert (got[:25, :25] == 1).all() and got[40, 40] == 2
    np.testing.assert_array_equal(store.coverage(Region(40, 40, 60, 60))[:, 0],
                                  np.arange(40, 60) < 50)


def test_interrupted_commit_is_repaired(store, monkeypatch):
    r = Region(0, 0, 256, 256)
    store.commit(r, np.ones(r.shape, np.uint8))

    def crash(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(LabelStore, "_update_levels", crash)
    with pytest.raises(KeyboardInterrupt):
        store.commit(r, np.full(r.shape, 2, np.uint8))  # level 0 written, pyramid not
    monkeypatch.undo()
    again = LabelStore.open(store.directory)
    assert again.interrupted == [r]
    assert (again.read(r) == 2).all()
    assert (np.asarray(again.labels_levels()[2])[:64, :64] == 2).all()  # rebuilt
    assert json.loads((store.directory / "regions.json").read_text())["pending"] is None


def test_instance_store(tmp_path):
    store = LabelStore.create(tmp_path / "n", (300, 300), NUCLEI)
    assert store.dtype == np.uint32
    labels = np.zeros((100, 100), np.uint32)
    labels[10:20, 10:20] = 70000
    store.commit(Region(0, 0, 100, 100), labels)
    again = LabelStore.open(tmp_path / "n")
    assert again.read(Region(0, 0, 100, 100)).max() == 70000
    assert again.max_label == 70000  # new ids of any region start above it


def test_hundred_thousand_pixel_square_stays_small(tmp_path):
    """A 100k x 100k store: creating, committing and showing it costs what was written."""
    process = psutil.Process(os.getpid())
    before = process.memory_info().rss
    store = LabelStore.create(tmp_path / "big", (100_000, 100_000), LGG, chunk=256)
    regions = [Region(0, 0, 1024, 1024), Region(50_176, 60_160, 51_200, 61_696),
               Region(99_000, 99_000, 100_000, 100_000)]
    for k, r in enumerate(regions):
        store.commit(r, _blob(r.shape, k))
    levels = LabelStore.open(tmp_path / "big").labels_levels()
    top = np.asarray(levels[-1])  # the whole slide at the coarsest level
    grown = process.memory_info().rss - before
    assert store.n_levels == 9 and top.shape == (391, 391)
    block = store.read(Region(50_176, 60_160, 50_176 + 256, 60_160 + 256))
    for _ in range(8):
        block = downsample(block, mode="labels")
    assert top[50_176 // 256, 60_160 // 256] == block[0, 0]
    assert store.nbytes_stored < 8 * 2**20, store.nbytes_stored
    assert grown < 200 * 2**20, grown
    print(f"100k x 100k: {store.nbytes_stored / 2**20:.2f} MiB on disk, "
          f"RSS +{grown / 2**20:.0f} MiB")
    # a single chunk of level 0 far from any commit reads as background
    assert not np.asarray(levels[0][30_000:30_256, 30_000:30_256]).any()


def test_class_map_round_trip_and_napari_tables():
    assert ClassMap.from_dict(LGG.to_dict()) == LGG
    colors = LGG.color_dict()
    assert colors[0][3] == 0 and colors[None][3] == 0
    assert colors[1] == pytest.approx((0x2C / 255, 0xA0 / 255, 0x2C / 255, 1.0))
    assert LGG.features()["class"][2] == "leading edge"
    assert LGG.id_of("infiltrating tumour") == 3
    with pytest.raises(ValueError, match="no class 'necrosis'"):
        LGG.id_of("necrosis")
    assert NUCLEI.color_dict() is None and NUCLEI.label_name(12) == "nucleus 12"


def test_standard_class_maps_are_the_models():
    """Each standard map is its declared model (a trained checkpoint's own resolution is the
    Annotate widget's ``model: <name>`` map): classes, colours, kind and working µm/px."""
    from napari_neuroseg.models.registry import ModelRegistry

    registry = ModelRegistry(bundled=False)
    for title, model in [("LGG tissue (4 classes)", "lgg-tissue"),
                         ("MRI FLAIR abnormality", "mri-flair-unet"),
                         ("nuclei (instances)", "nuclei-hovernet"),
                         ("CT metastasis", "ct-metastasis")]:
        spec = ClassMap.from_spec(registry.get(model))
        standard = STANDARD_CLASS_MAPS[title]
        assert (standard.names, standard.colors, standard.kind) == (
            spec.names, spec.colors, spec.kind)
        assert standard.resolution == spec.resolution
        assert standard.title == title and standard_class_map(title) == standard
    assert list(STANDARD_CLASS_MAPS) == [
        "LGG tissue (4 classes)", "MRI FLAIR abnormality", "nuclei (instances)", "CT metastasis"]
    assert LGG.resolution == registry.get("lgg-tissue").input.resolution  # 5 µm/px, not 1
    with pytest.raises(ValueError, match="choose from LGG tissue"):
        standard_class_map("GBM")


def test_a_small_grid_still_has_two_levels(tmp_path):
    """102 x 154 (a 0.5 µm/px test slide at 5 µm/px) fits one chunk, yet the store keeps a
    second level: napari cannot show a one-level multiscale labels layer."""
    store = LabelStore.create(tmp_path / "small", (102, 154), LGG, mpp=5.0)
    assert store.level_shapes == [(102, 154), (51, 77)]
    store.commit(Region(0, 0, 4, 4), np.full((4, 4), 2, np.uint8))
    levels = LabelStore.open(tmp_path / "small").labels_levels()
    assert [lv.shape for lv in levels] == [(102, 154), (51, 77)]
    assert (np.asarray(levels[1][:2, :2]) == 2).all()
