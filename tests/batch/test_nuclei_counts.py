"""Nucleus counts in the batch summary for inputs analysed as one region (H&E tiles): the
Nuclei widget's instances, per type too; inputs of several regions leave them empty."""

import csv

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from napari_neuroseg.__main__ import main
from napari_neuroseg.analysis.region import segment_nuclei
from napari_neuroseg.analysis.slide import plan_slide
from napari_neuroseg.batch import ModelSource, predict_inputs
from napari_neuroseg.batch.inputs import open_input
from napari_neuroseg.batch.nuclei import INSTANCES
from napari_neuroseg.models.hovernet import hv_targets

from .test_jobs import TYPES, _tiny_hovernet

SHAPE = (256, 192)  #: tile pixels; at 0.5 µm/px one region by default, two at region_size 192


def _quiet(_message):
    pass


TUMOUR_RGB, IMMUNE_RGB, BACKGROUND_RGB = (130, 40, 80), (60, 40, 140), (235, 190, 210)


def _disc_tile(seed):
    """A pink tile with dark discs of radius 7 about every 30 px, each red ('tumour') or blue
    ('immune') at random."""
    rng = np.random.default_rng(seed)
    image = np.empty((*SHAPE, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for cy in range(15, SHAPE[0] - 7, 30):
        for cx in range(15, SHAPE[1] - 7, 30):
            disc = (yy - cy - rng.integers(-3, 4)) ** 2 + (xx - cx - rng.integers(-3, 4)) ** 2
            image[disc <= 49] = TUMOUR_RGB if rng.random() < 0.5 else IMMUNE_RGB
    return image


def _oracle(typed):
    """A perfect HoVer-Net for dark discs (NP from darkness, HV from the discs it sees), with
    'tumour' where red is over blue (as in test_jobs) when ``typed``."""

    def predict(batch):
        out = np.zeros((len(batch), predict.output_channels, *batch.shape[2:]), np.float32)
        for i, patch in enumerate(batch):
            dark, tumour = patch.mean(axis=0) < 150, patch[0] > patch[2]
            out[i, 1], out[i, 0] = dark, ~dark
            out[i, 2:4] = hv_targets(ndi.label(dark)[0])
            if typed:
                out[i, 4], out[i, 5], out[i, 6] = ~dark, dark & tumour, dark & ~tumour
        return out

    predict.output_channels = 4 + (len(TYPES) if typed else 0)
    return predict


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """A folder of two tiles of discs that state no µm/px."""
    folder = tmp_path_factory.mktemp("nuclei_tiles") / "tiles"
    folder.mkdir()
    for seed in (1, 2):
        Image.fromarray(_disc_tile(seed)).save(folder / f"t{seed}.png")
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuclei_models")
    return {"typed": _tiny_hovernet(root / "typed", n_types=3),
            "untyped": _tiny_hovernet(root / "untyped")}


def _rows(out):
    with open(out / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def _widget(tile, ckpt, predictor):
    """What the Nuclei widget gives over the whole tile, with the batch's settings."""
    [(image, _)] = open_input(tile, 0.5, log=_quiet)
    plan = plan_slide(image, ModelSource(str(ckpt)).spec(), stain_normalization=True,
                      tissue_only=True)
    return segment_nuclei(plan, predictor)


def test_one_region_tiles_count_the_widgets_nuclei_per_type(tiles, checkpoints, tmp_path,
                                                            monkeypatch):
    oracle = _oracle(typed=True)
    monkeypatch.setattr(ModelSource, "runner", lambda self: oracle)
    ckpt = checkpoints["typed"]
    rows = predict_inputs([tiles], ModelSource(str(ckpt), device="cpu"), tmp_path / "out",
                          mpp=0.5, log=_quiet)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row, tile in zip(_rows(tmp_path / "out"), sorted(tiles.iterdir()), strict=True):
        widget = _widget(tile, ckpt, oracle)
        assert int(row["nuclei"]) == widget.count > 20
        instances = tifffile.imread(tmp_path / "out" / tile.stem / INSTANCES)
        assert instances.dtype == np.int32
        np.testing.assert_array_equal(instances, widget.data)
        per_type = {name: int(row[f"nuclei:{name}"]) for name in TYPES[1:]}
        assert per_type == {k: v for k, v in widget.type_counts.items() if k in per_type}
        assert sum(per_type.values()) == int(row["nuclei"])
        assert per_type["tumour"] > 0 and per_type["immune"] > 0
        assert "nuclei:untyped" not in row  # every nucleus got a nuclear type
        # per mm² of the analysed area: the whole tile here, as in the widget
        analysed = float(row["analysed_mm2"])
        assert analysed == pytest.approx(widget.area_mm2)
        assert float(row["nuclei_per_mm2"]) == pytest.approx(widget.density, abs=1e-3)
        for name in per_type:
            assert float(row[f"nuclei_per_mm2:{name}"]) == pytest.approx(
                widget.type_density[name], abs=1e-3)
        # the columns of before are still there
        assert float(row["area_mm2:nucleus"]) > 0 and "type_area_mm2:tumour" in row


def test_an_untyped_model_counts_without_type_columns(tiles, checkpoints, tmp_path, monkeypatch):
    oracle = _oracle(typed=False)
    monkeypatch.setattr(ModelSource, "runner", lambda self: oracle)
    tile = tiles / "t1.png"
    predict_inputs([tile], ModelSource(str(checkpoints["untyped"])), tmp_path / "out",
                   mpp=0.5, log=_quiet)
    [row] = _rows(tmp_path / "out")
    assert int(row["nuclei"]) == _widget(tile, checkpoints["untyped"], oracle).count > 3
    assert not any(key.startswith(("nuclei:", "nuclei_per_mm2:", "type_area")) for key in row)


def test_two_regions_leave_the_counts_empty(tiles, checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(ModelSource, "runner", lambda self: _oracle(typed=True))
    source = ModelSource(str(checkpoints["typed"]))
    tile, out = tiles / "t1.png", tmp_path / "out"
    predict_inputs([tile], source, out, mpp=0.5, log=_quiet)
    assert (out / "t1" / INSTANCES).is_file()
    lines = []
    predict_inputs([tile], source, out, mpp=0.5, region_size=192, log=lines.append)
    assert any("2 regions: nuclei not counted" in line and "--region-size 384" in line
               for line in lines)
    [row] = _rows(out)
    assert row["status"] == "ok"
    counts = ["nuclei", "nuclei_per_mm2"] + [f"{c}:{t}" for c in ("nuclei", "nuclei_per_mm2")
                                             for t in TYPES[1:]]
    assert {key: row[key] for key in counts} == dict.fromkeys(counts, "")
    assert float(row["area_mm2:nucleus"]) > 0  # the areas are still there
    assert not (out / "t1" / INSTANCES).exists()  # the earlier run's instances are gone


def test_cli_with_a_tiny_typed_hovernet_on_tiles(tiles, checkpoints, tmp_path):
    out = tmp_path / "cli"
    assert main(["predict", str(tiles), "--mpp", "0.5", "--model", str(checkpoints["typed"]),
                 "--out", str(out), "--device", "cpu"]) == 0
    for row in _rows(out):
        count = int(row["nuclei"])
        assert tifffile.imread(out / row["output"].rsplit("/", 1)[1] / INSTANCES).max() == count
        typed = sum(int(row[key]) for key in row if key.startswith("nuclei:"))
        assert typed == count
        assert float(row["nuclei_per_mm2"]) == pytest.approx(
            count / float(row["analysed_mm2"]) if count else 0.0, rel=1e-3)
