"""``python -m napari_neuroseg.demo``: scenes, screenshots and the numbers it prints."""

import re
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_neuroseg.demo._data import DEMO_PATIENT, lgg_patient_folder, lgg_patients
from napari_neuroseg.demo._main import REAL_FILES, plan, summary_line
from napari_neuroseg.demo._scenes import SceneResult, _live_caption, view_class_shares
from napari_neuroseg.engine import LevelChoice, Region
from napari_neuroseg.live.store import ResultStore

LINE = re.compile(r"^demo: (?P<stem>[\w-]+)\.png (?P<numbers>.*) \([\d.]+ s\) \| (?P<weights>.+)$")


def parse_lines(text: str) -> dict[str, dict[str, float]]:
    """Screenshot stem -> its printed numbers."""
    out = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            pairs = (item.split("=") for item in match["numbers"].split())
            out[match["stem"]] = {key: float(value) for key, value in pairs}
    return out


def test_plan_adds_real_scenes_only_for_files_present(tmp_path, capsys):
    (tmp_path / "ct_head_ge").mkdir()
    scenes = plan(tmp_path, {"slide": None, "ct": None, "mri": "own.tif"})
    assert [(stem, key) for stem, key, _ in scenes] == [
        ("slide", "slide"), ("ct", "ct"), ("mri", "mri"), ("ct-real", "ct")]
    assert scenes[2][2] == Path("own.tif") and scenes[0][2] is None
    assert scenes[3][2] == tmp_path / REAL_FILES["ct"]
    assert "no slide-real scene" in capsys.readouterr().out
    assert [s[0] for s in plan(None, {}, only=["mri"])] == ["mri"]
    live = plan(tmp_path, {}, only=["slide-live", "ct"])
    assert [(stem, key) for stem, key, _ in live] == [
        ("slide-live", "slide-live"), ("ct", "ct"), ("ct-real", "ct")]


def test_plan_runs_gbm_live_only_on_the_real_tcga_slide(tmp_path, capsys):
    """gbm-live is a default scene, but only with --data's TCGA slide (no synthetic run)."""
    assert [s[0] for s in plan(tmp_path, {})] == ["slide", "ct", "mri"]
    assert "no gbm-live-real scene" in capsys.readouterr().out
    tcga = tmp_path / REAL_FILES["gbm-live"]
    tcga.parent.mkdir()
    tcga.touch()
    scenes = plan(tmp_path, {"slide": "own.svs"})
    assert [(stem, key) for stem, key, _ in scenes] == [
        ("slide", "slide"), ("ct", "ct"), ("mri", "mri"), ("gbm-live-real", "gbm-live")]
    assert scenes[-1][2] == tcga and tcga.name == "tcga-cr-7395-01a-01-ts1.svs"
    assert plan(None, {}, only=["gbm-live"]) == []


def _fake_viewer(center, zoom, canvas):
    return SimpleNamespace(scene=SimpleNamespace(camera=SimpleNamespace(center=center,
                                                                        zoom=zoom)),
                           canvas=SimpleNamespace(size=canvas))


def test_view_class_shares_count_only_computed_pixels(tmp_path):
    """Shares of the analysed pixels on screen: a skipped tile (all-zero probabilities)
    counts for nothing, whatever its label 0 says."""
    store = ResultStore((20, 20), 3, scale=(5.0, 5.0), directory=tmp_path / "store")
    probs = np.zeros((3, 10, 20), np.float32)
    probs[1, :, :5] = 1.0  # 50 px of class 1
    probs[2, :, 5:] = 1.0  # 150 px of class 2
    store.write(Region(0, 0, 10, 20), probs, probs.argmax(axis=0))
    boxes = []
    session = SimpleNamespace(
        working_region=lambda box: boxes.append(box) or Region(0, 0, 20, 20), store=store,
        plan=SimpleNamespace(spec=SimpleNamespace(classes=("background", "a", "b")),
                             choice=SimpleNamespace(working_mpp=5.0)))
    shares, area = view_class_shares(session, _fake_viewer((50.0, 50.0), 2.0, (200, 100)))
    assert shares == {"background": 0.0, "a": 0.25, "b": 0.75}
    assert area == pytest.approx(200 * 0.005**2)
    assert tuple(boxes[0]) == (0.0, 25.0, 100.0, 75.0)  # the canvas, no margin


def test_live_caption_names_the_level_read_and_the_working_resolution():
    choice = LevelChoice(level=2, level_mpp=4.0, base_mpp=1.0, target_mpp=5.0, factor=1.25)
    image = SimpleNamespace(metadata={"native_levels": 2, "mpp_known": False}, levels=[0] * 3)
    widget = SimpleNamespace(
        session=SimpleNamespace(plan=SimpleNamespace(choice=choice, image=image)),
        counts={"computed": 18, "cached": 0, "skipped": 2},
        picker=SimpleNamespace(model=SimpleNamespace(value="gbm-tissue-8")),
        heat_class=SimpleNamespace(value="cellular tumour"))
    text, numbers = _live_caption(widget, "tcga.svs", {"background": 0.1,
                                                       "cellular tumour": 0.9}, 14.6)
    assert ("engine read level 2 (4 µm/px, computed from the file's level 1), resampled to "
            "5 µm/px working") in text
    assert "1 µm/px assumed" in text and "18 tiles computed, 2 skipped" in text
    assert "14.60 mm² analysed: cellular tumour 90%, background 10%" in text
    assert numbers["level"] == "2" and numbers["share:cellular_tumour"] == "0.900"


def test_summary_line_parses_back():
    line = summary_line("ct-real", SceneResult({"brain_ml": "1494", "slices": "28"}, "w x"), 3.25)
    assert line == "demo: ct-real.png brain_ml=1494 slices=28 (3.2 s) | w x"
    assert parse_lines(line) == {"ct-real": {"brain_ml": 1494.0, "slices": 28.0}}


def _write_slice(folder: Path, name: str, mask_pixels: int) -> None:
    tifffile.imwrite(folder / f"{name}.tif", np.zeros((8, 8, 3), np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask.flat[:mask_pixels] = 255
    tifffile.imwrite(folder / f"{name}_mask.tif", mask)


def test_lgg_patient_folder_links_the_patient_with_the_largest_mask(tmp_path):
    for name, pixels in [("TCGA_AA_0001_20000101_3", 5), ("TCGA_AA_0001_20000101_12", 0),
                         ("TCGA_BB_0002_20000101_7", 9), ("TCGA_CC_0003_20000101_1", 2)]:
        _write_slice(tmp_path, name, pixels)
    patients = lgg_patients(tmp_path)
    assert list(patients) == ["TCGA_AA_0001_20000101", "TCGA_BB_0002_20000101",
                              "TCGA_CC_0003_20000101"]
    assert [p.name for p in patients["TCGA_AA_0001_20000101"]] == [
        "TCGA_AA_0001_20000101_3.tif", "TCGA_AA_0001_20000101_12.tif"]  # by number
    folder = lgg_patient_folder(tmp_path)
    assert folder.name == "TCGA_BB_0002_20000101"
    assert sorted(p.name for p in folder.iterdir()) == [
        "TCGA_BB_0002_20000101_7.tif", "TCGA_BB_0002_20000101_7_mask.tif"]
    assert (folder / "TCGA_BB_0002_20000101_7.tif").resolve() == (
        tmp_path / "TCGA_BB_0002_20000101_7.tif")
    one = tmp_path / "one"
    one.mkdir()
    _write_slice(one, "TCGA_AA_0001_20000101_3", 1)
    assert lgg_patient_folder(one) == one


def test_lgg_patient_folder_picks_a_patient_folder_of_kaggle_3m(tmp_path):
    """The 40-patient layout: one sub-folder per study; the demo patient when present, else
    the one with the largest masks; its own folder, nothing linked."""
    for study, pixels in [("TCGA_AA_0001_20000101", 3), ("TCGA_BB_0002_20000101", 9)]:
        (tmp_path / study).mkdir()
        for n in (2, 4, 5):
            _write_slice(tmp_path / study, f"{study}_{n}", pixels)
    (tmp_path / "notes").mkdir()  # not a patient
    assert lgg_patient_folder(tmp_path) == tmp_path / "TCGA_BB_0002_20000101"
    assert lgg_patient_folder(tmp_path, "TCGA_AA_0001") == tmp_path / "TCGA_AA_0001_20000101"
    (tmp_path / f"{DEMO_PATIENT}_19970111").mkdir()
    _write_slice(tmp_path / f"{DEMO_PATIENT}_19970111", f"{DEMO_PATIENT}_19970111_3", 1)
    assert lgg_patient_folder(tmp_path).name == f"{DEMO_PATIENT}_19970111"


@pytest.mark.gui
def test_demo_on_the_samples_saves_screenshots_with_plausible_numbers(qapp, tmp_path, capsys,
                                                                      monkeypatch):
    from napari_neuroseg.demo import _scenes, main

    monkeypatch.setattr(_scenes, "SLIDE_VIEW_UM", 160.0)  # fewer tiles: a fast test
    out = tmp_path / "shots"
    code = main(["--out", str(out), "--exit", "--timeout", "90"])
    text = capsys.readouterr().out
    assert code == 0, text
    numbers = parse_lines(text)
    assert set(numbers) == {"slide", "ct", "mri"}, text
    for stem in numbers:
        shot = out / f"{stem}.png"
        assert shot.is_file() and shot.stat().st_size > 20_000
        pixels = np.asarray(iio.imread(shot))
        assert pixels.ndim == 3 and pixels[..., :3].std() > 10  # not a blank (black) canvas
    slide, ct, mri = numbers["slide"], numbers["ct"], numbers["mri"]
    weights = {m["stem"]: m["weights"] for m in map(LINE.match, text.splitlines()) if m}
    assert "RANDOM weights" in weights["ct"]  # ct-metastasis ships none: the line says so
    assert slide["nuclei"] >= 0 and slide["nuclei"] == int(slide["nuclei"])
    assert (slide["density_per_mm2"] > 0) == (slide["nuclei"] > 0)
    if "trained on real data" in weights["slide"]:  # the shipped HoVer-Net (119 measured)
        assert slide["nuclei"] >= 20 and 500 < slide["density_per_mm2"] < 20_000
    # the synthetic CT phantom's head: a brain of adult size (1522 ml measured)
    assert 800 < ct["brain_ml"] < 2000 and ct["slices"] == 24
    assert 0.0 <= ct["max_slice_probability"] <= 1.0
    # the synthetic MRI: the reference mask is a few ml; the model's volume is finite and
    # smaller than the stack
    assert mri["slices"] == 24 and 1.0 < mri["reference_ml"] < 20.0
    assert 0.0 <= mri["tumour_ml"] < 24 * 256 * 256 / 1000
    if "trained on real data" in weights["mri"]:  # the shipped model finds the bright lesion
        assert weights["mri"].startswith("mri-flair-transunet: ")  # the default: CV best
        assert mri["tumour_ml"] > 0.5 * mri["reference_ml"]


@pytest.mark.gui
def test_wait_until_names_the_step_on_timeout_and_failure(qapp):
    from napari_neuroseg.demo._viewer import DemoError, wait_until

    with pytest.raises(DemoError, match=r"CT brain mask: no result after 0 s \(widget status"):
        wait_until(lambda: False, what="CT brain mask", timeout=0.05,
                   status=lambda: "Brain mask...")
    with pytest.raises(DemoError, match="MRI segmentation failed: Failed: no model"):
        wait_until(lambda: True, what="MRI segmentation", timeout=5,
                   failed=lambda: "Failed: no model")
    calls = []
    wait_until(lambda: calls.append(1) or len(calls) > 2, what="x", timeout=5)
    assert len(calls) == 3


@pytest.mark.gui
@pytest.mark.slow
@pytest.mark.realdata
def test_gbm_live_on_the_tcga_slide_says_not_a_gbm_and_names_the_level(qapp, tmp_path,
                                                                        shared_data):
    """gbm-tissue-8 live on the whole TCGA section (about 2 min on 2 busy CPU cores)."""
    from napari_neuroseg.demo._main import run_scenes

    scenes = plan(shared_data, {}, only=["gbm-live"])
    assert [s[0] for s in scenes] == ["gbm-live-real"]
    result = run_scenes(scenes, tmp_path, timeout=600)["gbm-live-real"]
    text, numbers = result.caption, result.numbers
    assert "not a GBM" in text and "TCGA-HNSC" in text
    # the file's levels are 1 and 2 µm/px (assumed) and the reader adds 4: a model at 5 or
    # 10 µm/px reads that computed level, resampled
    assert int(numbers["level"]) == 2 and float(numbers["level_mpp"]) == pytest.approx(4, 0.01)
    assert f"engine read level 2 (4 µm/px, computed from the file's level 1), resampled " \
           f"to {numbers['working_mpp']} µm/px working" in text
    assert float(numbers["working_mpp"]) >= 5
    assert int(numbers["tiles_computed"]) > 0 and float(numbers["area_mm2"]) > 5  # mm of it
    shares = [float(v) for k, v in numbers.items() if k.startswith("share:")]
    assert len(shares) == 8 and sum(shares) == pytest.approx(1, abs=0.01)
    assert ("RANDOM weights" in result.weights) != ("trained on" in result.weights)
    assert (tmp_path / "gbm-live-real.png").stat().st_size > 20_000


@pytest.mark.gui
def test_slide_follow_shows_the_quick_preview_then_the_models_nuclei(qapp, tmp_path, capsys,
                                                                     monkeypatch):
    """--live's slide-follow scene: a screenshot while the preview is on, then the model's."""
    from napari_neuroseg.demo import _follow, main
    from napari_neuroseg.demo._main import LIVE_SCENES

    assert "slide-follow" in LIVE_SCENES
    monkeypatch.setattr(_follow, "FOLLOW_VIEW_UM", 192.0)  # fewer tiles: a fast test
    out = tmp_path / "shots"
    code = main(["--out", str(out), "--exit", "--timeout", "90", "--only", "slide-follow"])
    text = capsys.readouterr().out
    assert code == 0, text
    numbers = parse_lines(text)["slide-follow"]
    assert 0 < numbers["preview_s"] < numbers["model_s"] and numbers["nuclei"] >= 0
    for name in ("slide-follow.png", "slide-follow-preview.png"):
        pixels = np.asarray(iio.imread(out / name))
        assert pixels.ndim == 3 and pixels[..., :3].std() > 10  # a drawn canvas
    assert not np.array_equal(iio.imread(out / "slide-follow.png"),
                              iio.imread(out / "slide-follow-preview.png"))
