"""Batch prediction end to end on small synthetic inputs with a tiny real checkpoint."""

import csv
import dataclasses

import numpy as np
import pytest

from napari_neuroseg.__main__ import main
from napari_neuroseg.batch import ModelSource, predict_inputs
from napari_neuroseg.io import open_image
from napari_neuroseg.io.ome_zarr import read_ome_zarr
from napari_neuroseg.models import registry as registry_module
from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.slide import write_synthetic_slide

from .conftest import SPEC


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    ckpt = save_checkpoint(root / "toy", ModelRegistry().build(SPEC), SPEC)
    slide = write_synthetic_slide(root / "slide.tif", size=(768, 1024), tile=256, mpp=0.5,
                                  layout="pages", compression="zlib", levels=3)
    write_ct_series(root / "ct", n_slices=3, size=32)
    bad = root / "notes.txt"
    bad.write_text("not an image")
    return ckpt, [slide, root / "ct", bad]


def test_predicts_slides_reports_failures_and_resumes(inputs, tmp_path, model_calls):
    ckpt, paths = inputs
    source = ModelSource(str(ckpt), device="cpu")
    rows = predict_inputs(paths, source, tmp_path / "out", region_size=128, log=lambda m: None)
    status = {r["input"]: r["status"] for r in rows}
    assert status[str(paths[0])] == "ok"
    assert status[str(paths[1])].startswith("failed") and "runs on slides" in status[str(paths[1])]
    assert status[str(paths[2])].startswith("failed")
    first = model_calls["tiles"]
    assert first > 0
    out = tmp_path / "out" / "slide"
    labels, attrs = read_ome_zarr(out / "prediction.ome.zarr" / "labels" / "segmentation")
    probs, _ = read_ome_zarr(out / "prediction.ome.zarr")
    assert labels[0].shape == (384, 512) and probs[0].shape == (2, 384, 512)
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        1.0, 1.0]
    p = probs[0].compute()
    covered = p.sum(axis=0) > 0
    np.testing.assert_allclose(p.sum(axis=0)[covered], 1.0, atol=1e-4)
    assert 0 < covered.mean() < 1  # background tiles were skipped
    with open(tmp_path / "out" / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    row = next(r for r in summary if r["status"] == "ok")
    total = float(row["area_mm2:background"]) + float(row["area_mm2:tissue"])
    assert total == pytest.approx(float(row["analysed_mm2"]))
    assert row["synthetic_model"] == "1" and row["random_weights"] == "0"
    assert row["weights"] == str(ckpt)

    # the same command again: every tile comes from the disk cache
    model_calls["tiles"] = 0
    predict_inputs(paths[:1], source, tmp_path / "out", region_size=128, log=lambda m: None)
    assert model_calls["tiles"] == 0
    again, _ = read_ome_zarr(out / "prediction.ome.zarr")
    np.testing.assert_allclose(again[0].compute(), p, atol=1e-6)


def test_slide_output_is_ngff_04_with_labels_under_the_image(inputs, tmp_path):
    zarr = pytest.importorskip("zarr")
    v04 = pytest.importorskip("ome_zarr_models.v04")
    ckpt, paths = inputs
    predict_inputs(paths[:1], ModelSource(str(ckpt), device="cpu"), tmp_path / "out",
                   region_size=128, log=lambda m: None)
    out = tmp_path / "out" / "slide"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "prediction.ome.zarr"]
    root = zarr.open_group(str(out / "prediction.ome.zarr"), mode="r")
    image = v04.Image.from_zarr(root)  # raises on any NGFF 0.4 violation
    assert [a.name for a in image.attributes.multiscales[0].axes] == ["c", "y", "x"]
    assert image.labels.attributes.labels == ["segmentation"]
    label = v04.ImageLabel.from_zarr(root["labels/segmentation"])
    meta = label.attributes.image_label
    assert [(p.label_value, p.model_extra["class"]) for p in meta.properties] == [
        (0, "background"), (1, "tissue")]
    assert [list(c.rgba) for c in meta.colors] == [[0, 0, 0, 0], [255, 0, 255, 255]]
    # the labels lie over the image: same level-0 scale and translate
    image_ds = image.attributes.multiscales[0].datasets[0].coordinateTransformations
    label_ds = label.attributes.multiscales[0].datasets[0].coordinateTransformations
    assert list(image_ds[0].scale)[1:] == list(label_ds[0].scale)
    assert list(image_ds[1].translation)[1:] == list(label_ds[1].translation)


def test_napari_ome_zarr_opens_the_slide_output_with_its_labels(inputs, tmp_path):
    reader_plugin = pytest.importorskip("napari_ome_zarr")
    ckpt, paths = inputs
    predict_inputs(paths[:1], ModelSource(str(ckpt), device="cpu"), tmp_path / "out",
                   region_size=128, log=lambda m: None)
    path = str(tmp_path / "out" / "slide" / "prediction.ome.zarr")
    reader = reader_plugin.napari_get_reader(path)
    assert reader is not None
    layers = reader(path)
    kinds = sorted(kind for _data, _kwargs, kind in layers)
    assert kinds == ["image", "labels"]
    (labels,) = [data for data, _kwargs, kind in layers if kind == "labels"]
    level0 = labels[0] if isinstance(labels, list) else labels
    assert tuple(level0.shape) == (384, 512)


@pytest.fixture
def bundled_unet(tmp_path, monkeypatch):
    """A tiny mri-flair-unet shipped in a stand-in package weights folder."""
    base = ModelRegistry(bundled=False).get("mri-flair-unet")
    spec = dataclasses.replace(
        base, arch_kwargs={**base.arch_kwargs, "depth": 2, "base_features": 4},
        extra={**base.extra, "training_data": "toy slices (3 MR items)"})
    folder = tmp_path / "weights"
    folder.mkdir()
    weights = save_checkpoint(folder / "mri-flair-unet", ModelRegistry().build(spec), spec)
    monkeypatch.setattr(registry_module, "bundled_weights_folder", lambda: folder)
    return weights


def test_registry_name_runs_its_bundled_weights_and_says_so(bundled_unet, inputs, tmp_path):
    source = ModelSource("mri-flair-unet", device="cpu")
    assert source.checkpoint == bundled_unet
    assert source.spec().arch_kwargs["depth"] == 2
    assert source.key().startswith("mri-flair-unet:") and "random" not in source.key()
    assert source.weights() == (f"mri-flair-unet: weights {bundled_unet} (trained on real data "
                                "(toy slices (3 MR items), see docs/models.md))")
    assert "random weights" in ModelSource("lgg-tissue", random_weights=True).weights()
    lines = []
    predict_inputs([inputs[1][2]], source, tmp_path / "o", log=lines.append)
    assert lines[0] == f"model {source.weights()}"
    # the command line needs no --random-weights: the input fails, not the model
    code = main(["predict", str(inputs[1][2]), "--model", "mri-flair-unet", "--out",
                 str(tmp_path / "cli"), "--device", "cpu"])
    assert code == 1


def test_cli_exit_code_is_1_when_an_input_failed(inputs, tmp_path):
    ckpt, paths = inputs
    code = main(["predict", str(paths[2]), "--model", str(ckpt), "--out", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert code == 1
    assert (tmp_path / "o" / "summary.csv").read_text().count("failed") == 1


def test_progress_bar():
    from napari_neuroseg.batch.jobs import progress_bar

    assert progress_bar(0, 4, width=8) == "[........]   0%"
    assert progress_bar(3, 4, width=8) == "[######..]  75%"
    assert progress_bar(4, 4, width=8) == "[########] 100%"


TYPES = ["background", "tumour", "immune"]


def _tiny_hovernet(path, n_types=None):
    """nuclei-hovernet with a tiny random network (and a type branch when ``n_types``)."""
    registry = ModelRegistry()
    base = registry.get("nuclei-hovernet")
    spec = dataclasses.replace(
        base, name="tiny-hovernet",
        arch_kwargs={**base.arch_kwargs, "base_features": 4, "encoder_depth": 2,
                     "blocks_per_level": 1, "n_types": n_types},
        extra={**base.extra, "type_classes": TYPES if n_types else []})
    return save_checkpoint(path, registry.build(spec), spec)


@pytest.fixture(scope="module")
def nuclei_slide(tmp_path_factory):
    return write_synthetic_slide(tmp_path_factory.mktemp("nuclei") / "he.tif", size=(512, 512),
                                 tile=256, mpp=0.5, layout="pages", compression="zlib",
                                 levels=2)


def _summary(out):
    with open(out / "summary.csv") as fh:
        return next(r for r in csv.DictReader(fh) if r["status"] == "ok")


def test_nuclear_type_areas_in_the_summary(nuclei_slide, tmp_path, monkeypatch):
    """The batch path writes the nuclear mask (no instances): each nuclear pixel's type."""

    def typed_oracle(batch):  # dark pixels are nuclei, 'tumour' where red is over blue
        out = np.zeros((len(batch), 4 + len(TYPES), *batch.shape[2:]), np.float32)
        for i, patch in enumerate(batch):
            dark, tumour = patch.mean(axis=0) < 140, patch[0] > patch[2]
            out[i, 1], out[i, 0] = dark, ~dark
            out[i, 4], out[i, 5], out[i, 6] = ~dark, dark & tumour, dark & ~tumour
        return out

    typed_oracle.output_channels = 4 + len(TYPES)
    ckpt = _tiny_hovernet(tmp_path / "typed", n_types=3)
    monkeypatch.setattr(ModelSource, "runner", lambda self: typed_oracle)
    predict_inputs([nuclei_slide], ModelSource(str(ckpt), device="cpu"), tmp_path / "out",
                   region_size=256, log=lambda m: None)
    row = _summary(tmp_path / "out")
    tumour, immune = float(row["type_area_mm2:tumour"]), float(row["type_area_mm2:immune"])
    assert "type_area_mm2:background" not in row
    assert tumour + immune == pytest.approx(float(row["area_mm2:nucleus"]), abs=1e-5)
    # the probabilities keep the nuclear channels only; the areas follow the oracle's types
    probs, _ = read_ome_zarr(tmp_path / "out" / "he" / "prediction.ome.zarr")
    p = probs[0].compute()
    assert p.shape == (2, 512, 512)
    [image] = [im for im in open_image(nuclei_slide) if im.kind == "image"]
    pixels = np.asarray(image.levels[0]).astype(int)
    nuclear = p[1] > p[0]
    pixel_mm2 = 0.5e-3 ** 2
    red = pixels[..., 0] > pixels[..., 2]
    assert tumour == pytest.approx((nuclear & red).sum() * pixel_mm2, abs=1e-6)  # rounded
    assert immune == pytest.approx((nuclear & ~red).sum() * pixel_mm2, abs=1e-6)
    assert tumour > 0 and immune > 0


def test_cli_with_a_tiny_typed_hovernet_and_without_types(nuclei_slide, tmp_path):
    typed = _tiny_hovernet(tmp_path / "typed", n_types=3)
    assert main(["predict", str(nuclei_slide), "--model", str(typed), "--out",
                 str(tmp_path / "t"), "--device", "cpu"]) == 0
    row = _summary(tmp_path / "t")
    areas = [float(row[f"type_area_mm2:{name}"]) for name in TYPES[1:]]
    assert sum(areas) == pytest.approx(float(row["area_mm2:nucleus"]), abs=1e-5)
    untyped = _tiny_hovernet(tmp_path / "untyped")
    assert main(["predict", str(nuclei_slide), "--model", str(untyped), "--out",
                 str(tmp_path / "u"), "--device", "cpu"]) == 0
    row = _summary(tmp_path / "u")
    assert float(row["area_mm2:nucleus"]) >= 0
    assert not any(key.startswith("type_area") for key in row)
