"""``python -m training nuclei``: synthetic tiles -> one epoch -> instances the plugin can use."""

import json

import numpy as np
import pytest
import torch
from skimage.draw import ellipse

from napari_neuroseg.dataset import Dataset, DatasetWriter, convert_nuclei_tiles
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.hovernet_post import hovernet_instances
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from training.cli import main
from training.tasks._common import DataError, build_spec
from training.tasks.nuclei import task as nuclei
from training.tasks.nuclei.data import NucleiTiles, crops_per_tile, random_crop
from training.tasks.nuclei.targets import (
    HoVerNetLoss,
    hv_gradient_kernels,
    msge_loss,
    nuclei_targets,
)

SIZE = 96
TINY = "base_features: 4\nencoder_depth: 2\nblocks_per_level: 1\ncrop_size: 64\n" \
       "batch_size: 4\nnum_workers: 0\n"


def synthetic_tile(seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A pink tile with dark purple ellipses (radii 5-8 px) and their instance labels."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (235, 190, 215)
    labels = np.zeros((size, size), np.uint16)
    n = 0
    for _ in range(40):  # nuclei may touch but never overlap
        r, c = rng.integers(8, size - 8, 2)
        rows, cols = ellipse(r, c, rng.integers(5, 9), rng.integers(5, 9), shape=labels.shape,
                             rotation=rng.uniform(0, np.pi))
        if labels[rows, cols].any():
            continue
        n += 1
        labels[rows, cols] = n
        image[rows, cols] = (90, 50, 130)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuclei")
    with DatasetWriter(root / "ds", "nuclei", "HE", {0: "background", 1: "nucleus"}) as writer:
        for i in range(6):
            image, labels = synthetic_tile(i)
            writer.add(image, labels, patient_id=f"TCGA-XX-000{i // 2}", slide_id=f"s{i}")
    return root / "ds"


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One epoch through the command line; returns the run folder."""
    root = tmp_path_factory.mktemp("run")
    config = root / "tiny.yaml"
    config.write_text(TINY + "ksize: 7\nmin_size: 8\n")
    code = main(["nuclei", "--data", str(dataset), "--out", str(root / "run"), "--epochs", "1",
                 "--device", "cpu", "--config", str(config), "--seed", "2"])
    assert code == 0
    return root / "run"


def test_one_epoch_writes_metrics_report_and_a_checkpoint_the_plugin_runs(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("dice", "aji", "dq", "sq", "pq"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, key
    assert metrics["val_patients"] == 1 and metrics["val_tiles"] == 2
    assert metrics["n_images"] == 2 and metrics["nuclei_true"] > 10
    assert metrics["weights"] == "best" and metrics["best_epoch"] == 0
    history = json.loads((trained / "history.json").read_text())
    assert {"pq", "aji", "dice", "train_hv_msge", "val_np_ce"} <= set(history)
    assert history["train_hv_msge"][0] > 0 and history["lr"][0] == [1e-4]
    report = (trained / "report.md").read_text()
    assert "pq" in report and "Patient-wise split: 2 training patient(s)" in report
    assert (trained / "plots" / "instances.png").stat().st_size > 0
    assert (trained / "plots" / "history.png").stat().st_size > 0

    loaded = load_checkpoint(trained / "checkpoints" / "best")
    assert loaded.spec.name == "nuclei-hovernet" and loaded.spec.arch_kwargs["base_features"] == 4
    assert loaded.spec.extra["postprocess"]["ksize"] == 7
    image, _ = synthetic_tile(0)
    out = ModelRunner(loaded.model, loaded.spec, device="cpu")(
        image.transpose(2, 0, 1)[None].astype(np.float32))
    assert out.shape == (1, 4, SIZE, SIZE)
    np.testing.assert_allclose(out[0, 0] + out[0, 1], 1.0, atol=1e-5)
    # the plugin's post-processing of a confident prediction gives instances
    labels = hovernet_instances(out[0, 1], out[0, 2:], **loaded.spec.extra["postprocess"])
    assert labels.shape == (SIZE, SIZE) and labels.dtype == np.int32


def test_evaluate_through_the_cli_gives_the_same_kind_of_metrics(trained, dataset, tmp_path,
                                                                  capsys):
    capsys.readouterr()
    code = main(["evaluate", "--model", str(trained / "checkpoints" / "best"), "--data",
                 str(dataset), "--device", "cpu", "--out", str(tmp_path / "eval")])
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "nuclei" and metrics["items"] == 6 and metrics["n_images"] == 6
    for key in ("dice", "aji", "pq"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    assert json.loads(capsys.readouterr().out)["pq"] == metrics["pq"]


def test_evaluate_scores_a_perfect_model_as_perfect(dataset):
    """Instance metrics are right end to end: a model that outputs the targets scores 1."""
    data = Dataset.open(dataset)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            found = [i for i in range(6) if torch.equal(x, tiles[i][0][None])]
            target = tiles[found[0]][1]
            logits = torch.stack([1 - target["np"], target["np"]]).float() * 20 - 10
            return {"np": logits[None], "hv": target["hv"][None]}

    spec = build_spec("nuclei-hovernet", extra={"postprocess": {"ksize": 5, "min_size": 5}})
    tiles = NucleiTiles(data, np.arange(6), spec)
    loaded = type("Loaded", (), {"model": Oracle(), "spec": spec})()
    metrics = nuclei.evaluate(loaded, data, torch.device("cpu"), batch_size=1)
    assert metrics["dice"] == metrics["aji"] == metrics["pq"] == 1.0
    assert metrics["nuclei_pred"] == metrics["nuclei_true"] > 60


def test_hv_targets_span_minus_one_to_one_are_zero_at_centroids_and_flip_sign():
    labels = np.zeros((40, 60), np.int32)
    labels[ellipse(12, 15, 7, 10, shape=labels.shape)] = 3
    labels[ellipse(26, 42, 9, 6, shape=labels.shape)] = 8
    np_target, hv = nuclei_targets(labels)
    assert np_target.dtype == np.int64 and set(np.unique(np_target)) == {0, 1}
    assert hv.shape == (2, 40, 60) and hv.min() == -1.0 and hv.max() == 1.0
    assert np.all(hv[:, labels == 0] == 0)
    for r, c in ((12, 15), (26, 42)):
        assert hv[0, r, c] == 0 and hv[1, r, c] == 0
        assert hv[0, r, c - 3] < 0 < hv[0, r, c + 3]  # horizontal: left negative, right positive
        assert hv[1, r - 3, c] < 0 < hv[1, r + 3, c]  # vertical: above negative, below positive
        assert np.all(np.diff(hv[0, r, c - 4:c + 5]) > 0)


def test_msge_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    labels = np.zeros((32, 32), np.int32)
    labels[ellipse(10, 10, 6, 6)] = 1
    labels[ellipse(20, 22, 7, 5)] = 2
    np_target, hv = nuclei_targets(labels)
    true = torch.from_numpy(hv)[None]
    focus = torch.from_numpy(np_target)[None]
    assert float(msge_loss(true.clone(), true, focus)) == 0.0
    assert float(msge_loss(true * 0.5, true, focus)) > 0.01
    far = torch.zeros_like(true)
    far[..., 28:, :4] = 3.0  # an error more than the kernel's reach away from any nucleus
    assert float(msge_loss(true + far, true, focus)) == 0.0
    assert float(msge_loss(true + far, true, torch.ones_like(focus))) > 0.1
    kx, ky = hv_gradient_kernels(5)
    ramp = torch.arange(9.0).repeat(9, 1)[None, None]  # increases along x
    assert torch.nn.functional.conv2d(ramp, kx)[0, 0, 2, 2] > 0
    assert abs(float(torch.nn.functional.conv2d(ramp, ky)[0, 0, 2, 2])) < 1e-5


def test_hovernet_loss_weights_its_terms_and_reports_them_per_phase():
    labels = np.zeros((24, 24), np.int32)
    labels[ellipse(12, 12, 6, 6)] = 1
    np_target, hv = nuclei_targets(labels)
    targets = {"np": torch.from_numpy(np_target)[None], "hv": torch.from_numpy(hv)[None]}
    outputs = {"np": torch.randn(1, 2, 24, 24, requires_grad=True),
               "hv": torch.randn(1, 2, 24, 24, requires_grad=True)}
    loss = HoVerNetLoss(1.0, 1.0, 1.0, 2.0)
    terms = loss.terms(outputs, targets)
    total = loss(outputs, targets)
    expected = terms["np_ce"] + terms["np_dice"] + terms["hv_mse"] + 2 * terms["hv_msge"]
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    total.backward()
    assert outputs["hv"].grad.abs().sum() > 0
    with torch.no_grad():
        loss(outputs, targets)
    popped = loss.pop_terms()
    assert popped["train_np_ce"] == pytest.approx(float(terms["np_ce"].detach()), rel=1e-5)
    assert set(popped) == {f"{p}_{t}" for p in ("train", "val")
                           for t in ("np_ce", "np_dice", "hv_mse", "hv_msge")}
    assert loss.pop_terms() == {}


def test_training_crops_and_their_targets_match_and_are_augmented(dataset):
    data = Dataset.open(dataset)
    spec = build_spec("nuclei-hovernet")
    tiles = NucleiTiles(data, [0, 1], spec, crop=48, crops_per_item=3,
                        augment=nuclei.nuclei_augment(1.0, 1.0, 0.0))
    assert len(tiles) == 6
    torch.manual_seed(0)
    x, targets, instances = tiles[0]
    assert x.shape == (3, 48, 48) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    np.testing.assert_array_equal(targets["np"].numpy(), (instances.numpy() > 0).astype(int))
    np.testing.assert_array_equal(targets["hv"].numpy(), nuclei_targets(instances.numpy())[1])
    torch.manual_seed(1)
    assert not torch.equal(tiles[0][0], x)
    image, mask = random_crop(np.zeros((20, 30, 3), np.uint8), np.ones((20, 30), np.int32), 32,
                              np.random.default_rng(0))
    assert image.shape == (32, 32, 3) and mask[25, 5] == 0 and image[25, 5, 0] == 255
    assert crops_per_tile((512, 512), 256) == 4 and crops_per_tile((96, 96), 256) == 1


def test_tiles_without_patient_ids_are_refused_before_training(tmp_path):
    with DatasetWriter(tmp_path / "ds", "nuclei", "HE", {0: "background", 1: "nucleus"}) as w:
        for i in range(2):
            image, labels = synthetic_tile(i, 32)
            w.add(image, labels, slide_id=f"s{i}", patient_id="P1" if i else None)
    with pytest.raises(DataError, match="without a patient id"):
        main(["nuclei", "--data", str(tmp_path / "ds"), "--epochs", "1", "--device", "cpu"])


def test_a_training_split_without_nuclei_is_refused(tmp_path):
    with DatasetWriter(tmp_path / "ds", "nuclei", "HE", {0: "background", 1: "nucleus"}) as w:
        image, labels = synthetic_tile(0, 32)
        w.add(image, np.zeros_like(labels), patient_id="A", split="train")
        w.add(image, labels, patient_id="B", split="val")
    with pytest.raises(DataError, match="absent from the training split"):
        main(["nuclei", "--data", str(tmp_path / "ds"), "--epochs", "1", "--device", "cpu"])


def test_an_even_ksize_is_refused_before_training(dataset, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY + "ksize: 8\n")
    with pytest.raises(ValueError, match="ksize must be an odd integer"):
        main(["nuclei", "--data", str(dataset), "--epochs", "1", "--device", "cpu",
              "--config", str(config)])


@pytest.mark.slow
@pytest.mark.realdata
def test_evaluate_an_untrained_tiny_model_on_two_real_tiles(shared_sample, tmp_path):
    src = shared_sample("nuclei_lgg_tiles")
    raw, xml = tmp_path / "raw", tmp_path / "xml"
    raw.mkdir()
    xml.mkdir()
    tiles = sorted((src / "raw_image").iterdir())
    for tile in (tiles[0], tiles[-1]):
        (raw / tile.name).write_bytes(tile.read_bytes())
        for annotation in (src / "contour_annotation_xml").glob(tile.stem + "*"):
            (xml / annotation.name).write_bytes(annotation.read_bytes())
    data = convert_nuclei_tiles(raw, xml, tmp_path / "two")
    assert data.task == "nuclei" and len(data.items) == 2 and len(data.patients()) == 2
    assert data.items[0].shape[:2] == (512, 512)
    spec = build_spec("nuclei-hovernet", {"base_features": 4, "encoder_depth": 2,
                                          "blocks_per_level": 1})
    torch.manual_seed(0)
    model = ModelRegistry().build(spec)
    loaded = type("Loaded", (), {"model": model, "spec": spec})()
    metrics = nuclei.evaluate(loaded, data, torch.device("cpu"), batch_size=2)
    assert metrics["n_images"] == 2 and metrics["nuclei_true"] > 100
    for key in ("dice", "aji", "dq", "sq", "pq"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
