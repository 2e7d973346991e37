"""Batch prediction on plain H&E tiles: ``--mpp`` for tiles that do not state their µm/px, and
a folder of tiles giving one result per tile."""

import csv
import dataclasses

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_neuroseg.__main__ import build_parser, main
from napari_neuroseg.batch import ModelSource, predict_inputs
from napari_neuroseg.batch.inputs import expand_inputs, open_input, tile_folder_files
from napari_neuroseg.io import ReaderError
from napari_neuroseg.io.ome_zarr import read_ome_zarr
from napari_neuroseg.io.slide import DEFAULT_MPP
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples._slide_texture import he_region
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.mri import write_lgg_patient

TILE = 128  #: tile edge in pixels; at 0.25 µm/px the model's 0.5 µm/px grid is 64 px


def _he(seed):
    return he_region(0, 0, TILE, TILE, size=(TILE, TILE), seed=seed)


@pytest.fixture(scope="module")
def tiny_hovernet(tmp_path_factory):
    """nuclei-hovernet (0.5 µm/px) with a tiny random network, as a checkpoint."""
    registry = ModelRegistry()
    base = registry.get("nuclei-hovernet")
    assert base.input.resolution == 0.5
    spec = dataclasses.replace(base, name="tiny-hovernet", arch_kwargs={
        **base.arch_kwargs, "base_features": 4, "encoder_depth": 2, "blocks_per_level": 1})
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", registry.build(spec), spec)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """A folder of three tiles that state no µm/px: two PNG (one RGBA), one JPEG."""
    folder = tmp_path_factory.mktemp("tiles") / "images"
    folder.mkdir()
    Image.fromarray(_he(1)).save(folder / "b.png")
    rgba = np.dstack([_he(2), np.full((TILE, TILE), 255, np.uint8)])
    Image.fromarray(rgba).save(folder / "a.png")
    Image.fromarray(_he(3)).save(folder / "c.jpg", quality=95)
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    return folder


def _tiff_at(path, mpp):
    """A single RGB TIFF picture that records ``mpp`` in its resolution tags."""
    tifffile.imwrite(path, _he(4), photometric="rgb",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def _rows(out):
    with open(out / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def _labels(folder):
    labels, attrs = read_ome_zarr(folder / "prediction.ome.zarr" / "labels" / "segmentation")
    return labels[0], attrs


def _quiet(_message):
    pass


def test_a_folder_of_tiles_gives_one_result_per_tile_at_the_given_mpp(tiles, tiny_hovernet,
                                                                     tmp_path, model_calls):
    lines = []
    source = ModelSource(str(tiny_hovernet), device="cpu")
    rows = predict_inputs([tiles], source, tmp_path / "out", mpp=0.25, log=lines.append)
    assert [r["input"] for r in rows] == [str(tiles / n) for n in ("a.png", "b.png", "c.jpg")]
    assert all(r["status"] == "ok" for r in rows), rows
    assert any("a folder of 3 tiles" in line for line in lines)
    assert not any("ASSUM" in line for line in lines)
    for row, name in zip(_rows(tmp_path / "out"), ("a", "b", "c"), strict=True):
        assert row["output"] == str(tmp_path / "out" / name)
        assert float(row["mpp"]) == 0.25 and row["mpp_source"] == "--mpp"
        labels, attrs = _labels(tmp_path / "out" / name)
        assert labels.shape == (TILE // 2, TILE // 2)  # 128 px at 0.25 -> 64 px at 0.5
        scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert scale == pytest.approx([0.5, 0.5])
        analysed = float(row["analysed_mm2"])
        assert 0 < analysed <= (TILE * 0.25e-3) ** 2 + 1e-9
    assert model_calls["tiles"] > 0
    # the same command again: every tile from the cache
    done = model_calls["tiles"]
    predict_inputs([tiles], source, tmp_path / "out", mpp=0.25, log=_quiet)
    assert model_calls["tiles"] == done
    # another µm/px is another resampling: nothing stale from the cache
    rows = predict_inputs([tiles / "b.png"], source, tmp_path / "out", mpp=0.5, log=_quiet)
    assert model_calls["tiles"] > done and rows[0]["status"] == "ok"
    assert _labels(tmp_path / "out" / "b")[0].shape == (TILE, TILE)


def test_without_mpp_a_tile_is_assumed_at_the_default_and_the_run_says_so(tiles, tiny_hovernet,
                                                                          tmp_path):
    lines = []
    rows = predict_inputs([tiles / "b.png"], ModelSource(str(tiny_hovernet), device="cpu"),
                          tmp_path / "out", log=lines.append)
    [row] = _rows(tmp_path / "out")
    assert rows[0]["status"] == "ok" and float(row["mpp"]) == DEFAULT_MPP
    assert row["mpp_source"].startswith("ASSUMED") and "--mpp" in row["mpp_source"]
    assert any("ASSUMING" in line and "b.png" in line and "--mpp" in line for line in lines)
    assert not any("Open image" in line for line in lines)  # the GUI's advice is not shown
    # 1 µm/px resampled to 0.5 µm/px: twice as many working pixels
    assert _labels(tmp_path / "out" / "b")[0].shape == (2 * TILE, 2 * TILE)


def test_a_stated_mpp_is_kept_and_a_different_one_is_warned_or_forced(tmp_path):
    tif = _tiff_at(tmp_path / "t.tif", 0.5)
    lines = []
    [(image, columns)] = open_input(tif, 0.25, log=lines.append)
    assert image.scale == pytest.approx((0.5, 0.5))
    assert columns == {"mpp": 0.5, "mpp_source": "file: TIFF XResolution/YResolution "
                                                  "(--mpp 0.25 ignored)"}
    assert any("WARNING" in line and "--force-mpp" in line for line in lines)
    lines.clear()
    [(image, columns)] = open_input(tif, 0.5005, log=lines.append)  # within 1 %: no warning
    assert image.scale == pytest.approx((0.5, 0.5)) and not lines
    assert columns["mpp_source"] == "file: TIFF XResolution/YResolution"
    [(image, columns)] = open_input(tif, 0.25, force_mpp=True, log=lines.append)
    assert image.scale == pytest.approx((0.25, 0.25))
    assert columns == {"mpp": 0.25, "mpp_source": "--mpp (file: 0.5)"}
    [(_, columns)] = open_input(tif, None, log=_quiet)
    assert columns["mpp"] == 0.5


def test_a_png_at_72_dpi_takes_mpp_and_its_note_is_logged(tmp_path):
    path = tmp_path / "dpi.png"
    Image.fromarray(_he(5)).save(path, dpi=(72, 72))
    lines = []
    [(image, columns)] = open_input(path, 0.25, log=lines.append)
    assert image.scale == (0.25, 0.25) and columns["mpp_source"] == "--mpp"
    assert any("dpi" in line and "ignored" in line for line in lines)


def test_what_a_folder_is(tiles, tmp_path):
    assert tile_folder_files(tiles) == [tiles / "a.png", tiles / "b.png", tiles / "c.jpg"]
    ct = tmp_path / "ct"
    write_ct_series(ct, n_slices=3, size=32)
    lgg = write_lgg_patient(tmp_path / "lgg", n_slices=2, size=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (ct, lgg, empty, tiles / "a.png"):
        assert tile_folder_files(folder) is None  # DICOM, LGG and empty folders keep theirs
    assert expand_inputs([ct, tiles / "a.png", lgg], log=_quiet) == [ct, tiles / "a.png", lgg]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(_he(6)).save(mixed / "x.png")
    (mixed / "notes.txt").write_text("not a tile")
    with pytest.raises(ReaderError, match=r"notes\.txt"):
        tile_folder_files(mixed)
    assert expand_inputs([mixed], log=_quiet) == [mixed]
    with pytest.raises(ReaderError, match="only PNG, JPEG or RGB TIFF"):
        open_input(mixed, 0.25, log=_quiet)


def test_tiles_with_one_stem_get_their_own_folders(tmp_path, tiny_hovernet):
    folder = tmp_path / "same"
    folder.mkdir()
    Image.fromarray(_he(7)).save(folder / "x.png")
    Image.fromarray(_he(8)).save(folder / "x.jpg")
    _tiff_at(folder / "x.tif", 0.25)
    rows = predict_inputs([folder], ModelSource(str(tiny_hovernet), device="cpu"),
                          tmp_path / "out", mpp=0.25, log=_quiet)
    assert [r["status"] for r in rows] == ["ok"] * 3
    outputs = [r["output"] for r in rows]
    assert len(set(outputs)) == 3
    assert {o.rsplit("/", 1)[1] for o in outputs} == {"x", "x__2", "x__3"}
    assert [r["mpp"] for r in rows] == [0.25] * 3  # the TIFF states 0.25 itself
    assert [r["mpp_source"] for r in rows].count("file: TIFF XResolution/YResolution") == 1


def test_cli_tiles_with_mpp(tiles, tiny_hovernet, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["predict", str(tiles), "--mpp", "0.25", "--model", str(tiny_hovernet),
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    rows = _rows(out)
    assert len(rows) == 3 and {r["mpp"] for r in rows} == {"0.25"}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a", "b", "c", "summary.csv"]
    assert "3 done, 0 failed" in capsys.readouterr().err


def test_cli_without_mpp_says_what_it_assumed(tiles, tiny_hovernet, tmp_path, capsys):
    assert main(["predict", str(tiles / "c.jpg"), "--model", str(tiny_hovernet), "--out",
                 str(tmp_path / "o"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"ASSUMING {DEFAULT_MPP:g} µm/px" in err
    assert _rows(tmp_path / "o")[0]["mpp_source"].startswith("ASSUMED")


@pytest.mark.parametrize("args, message", [
    (["--mpp", "-1"], "positive number"),
    (["--mpp", "abc"], "positive number"),
    (["--force-mpp"], "--force-mpp needs --mpp"),
])
def test_cli_refuses_a_bad_mpp(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "x.png", "--model", "m", "--out", str(tmp_path), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_help_states_the_default_mpp():
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    [action] = [a for a in predict._actions if a.dest == "mpp"]
    assert f"assumed {DEFAULT_MPP:g} µm/px" in action.help
