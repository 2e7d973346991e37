"""``python -m training nuclei-tiles``: supervised stage + a pseudo-label cycle on tiny tiles."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from napari_neuroseg.dataset import Dataset, DatasetWriter
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from training.cli import main
from training.tasks.nuclei_tiles.data import (
    TileSource,
    join_sources,
    split_test_pool,
    unlabelled_pool,
)
from training.tasks.nuclei_tiles.pseudo import BestWeights, pseudo_label, select_pseudo_labels

SIZE = 32  # tiles and network input (config input_size); the spec's 256 is refused for them
CLASSES = {0: "NO_NUCLEUS", 1: "NUCLEI"}


def _tile(rng, nuclei: bool, size: int = SIZE) -> np.ndarray:
    """Pink background; NUCLEI tiles get 2-4 dark purple round blobs."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = (235, 190, 215)
    image += rng.normal(0, 8, image.shape)
    if nuclei:
        yy, xx = np.mgrid[:size, :size]
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(5, size - 5, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 6) ** 2] = (70, 40, 120)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write(path, labels, size=SIZE, slides=4, seed=0):
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, "nuclei-tiles", "HE", CLASSES) as writer:
        for n, label in enumerate(labels):
            writer.add(_tile(rng, bool(label), size), label=int(label),
                       slide_id=f"slide-{n % slides}", extra={"synthetic": True})
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 tiles from 4 slides (both classes on every slide) and a pool of 6 two-tile images."""
    root = tmp_path_factory.mktemp("nuclei_tiles")
    _write(root / "data", [n // 4 % 2 for n in range(40)])
    pool = root / "pool"
    pool.mkdir()
    rng = np.random.default_rng(1)
    for n in range(6):
        pair = np.concatenate([_tile(rng, n % 2 == 0), _tile(rng, n % 3 == 0)], axis=1)
        Image.fromarray(pair).save(pool / f"crop_{n}.png")
    return root


def _config(tmp_path, data, **extra):
    options = {"input_size": SIZE, "batch_size": 8, "unlabeled": str(data / "pool"),
               "pseudo_cycles": 1, "confidence_threshold": 0.5, "cycle_epochs": 1, **extra}
    path = tmp_path / "config.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in options.items()))
    return str(path)


def _train(data, out, config, seed=3, *more):
    return main(["nuclei-tiles", "--data", str(data / "data"), "--out", str(out), "--epochs",
                 "1", "--device", "cpu", "--seed", str(seed), "--config", config, *more])


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One supervised epoch and one pseudo-labelling cycle of one epoch."""
    tmp = tmp_path_factory.mktemp("run")
    config = _config(tmp, data)
    assert _train(data, tmp / "run", config) == 0
    return tmp / "run", config


def test_run_writes_metrics_cycles_and_a_checkpoint_the_plugin_runs(trained):
    run, _ = trained
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "recall", "f1", "auc", "precision_weighted",
                "f1_weighted"):
        assert 0.0 <= metrics[key] <= 1.0, key
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.sum() == metrics["val_tiles"] == metrics["n_tiles"]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert metrics["recall"] == pytest.approx(matrix[1, 1] / matrix[1].sum())
    assert metrics["support"]["NUCLEI"] == matrix[1].sum() > 0
    assert metrics["train_tiles"] + metrics["val_tiles"] == 40 and metrics["pool_tiles"] == 12
    assert [c["cycle"] for c in metrics["cycles"]] == [0, 1]
    assert metrics["cycles"][0]["pseudo_labels"] is None
    assert metrics["selected_cycle"] in (0, 1)
    for name in ("history", "confusion_matrix", "per_class_recall", "probability_histograms",
                 "learning_curves"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 0
    report = (run / "report.md").read_text()
    assert "synthetic data" in report and "pseudo-labels accepted" in report

    loaded = load_checkpoint(run / "checkpoints" / "best")
    assert loaded.spec.name == "nuclei-lenet" and loaded.spec.synthetic
    assert loaded.spec.arch_kwargs["input_size"] == SIZE
    assert loaded.spec.input.patch_size == (SIZE, SIZE) and loaded.spec.extra["stride"] == 16
    tiles = np.stack([_tile(np.random.default_rng(5), k) for k in (False, True)])
    probs = ModelRunner(loaded.model, loaded.spec, device="cpu")(
        tiles.transpose(0, 3, 1, 2).astype(np.float32))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    selected = load_checkpoint(run / f"cycle-{metrics['selected_cycle']}" / "checkpoints" / "best")
    for key, value in selected.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key


def test_pseudo_labels_are_counted_and_above_the_threshold(trained):
    run, _ = trained
    metrics = json.loads((run / "metrics.json").read_text())
    chosen = json.loads((run / "cycle-1" / "pseudo_labels.json").read_text())
    threshold = 0.5 * 0.95  # relative to the smoothed loss's ceiling 1 - 0.1 + 0.1 / 2
    assert chosen["pool_size"] == 12 and chosen["threshold"] == pytest.approx(threshold)
    assert all(t["confidence"] > threshold for t in chosen["tiles"])
    counts = {name: sum(t["label"] == c for t in chosen["tiles"]) for c, name in CLASSES.items()}
    cycle = metrics["cycles"][1]
    assert cycle["pseudo_labels"] == counts
    assert cycle["train_tiles"] == metrics["train_tiles"] + len(chosen["tiles"])
    history = json.loads((run / "history.json").read_text())
    assert history["cycle"] == [0, 1] and history["epoch"] == [0, 1]
    assert history["pseudo_labels"] == [None, counts]
    assert json.loads((run / "cycle-1" / "history.json").read_text())["pseudo_labels"] == [counts]
    assert cycle["pseudo_threshold"] == pytest.approx(threshold)


def test_history_has_the_learning_rate_and_the_training_accuracy(trained):
    run, _ = trained
    history = json.loads((run / "history.json").read_text())
    assert history["lr"] == [[1e-3], [1e-3]]
    assert all(0.0 <= a <= 1.0 for a in history["train_accuracy"])
    assert len(history["train_accuracy"]) == len(history["epoch"]) == 2


def test_evaluate_gives_the_tile_metrics_of_a_checkpoint(trained, data, tmp_path, capsys):
    run, _ = trained
    capsys.readouterr()
    code = main(["evaluate", "--model", str(run / "checkpoints" / "best"), "--data",
                 str(data / "data"), "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["task"] == "nuclei-tiles" and metrics["n_tiles"] == 40
    assert np.asarray(metrics["confusion_matrix"]).sum() == 40
    assert metrics["support"] == {"NO_NUCLEUS": 20, "NUCLEI": 20}
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["f1_weighted"] <= 1.0
    assert json.loads(capsys.readouterr().out)["accuracy"] == metrics["accuracy"]


def test_same_seed_gives_identical_metrics(trained, data, tmp_path):
    run, config = trained
    assert _train(data, tmp_path / "again", config) == 0
    assert (tmp_path / "again" / "metrics.json").read_text() == \
        (run / "metrics.json").read_text()


def test_resume_reuses_finished_cycles_and_the_pseudo_labels(trained, data, tmp_path):
    run, config = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert not (copy / "cycle-0" / "state").exists()  # finished cycles keep no state
    for path in (copy / "cycle-1").iterdir():  # killed when cycle 1 had just chosen its tiles
        if path.name != "pseudo_labels.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (copy / "metrics.json").unlink()
    best0 = copy / "cycle-0" / "checkpoints" / "best.safetensors"
    stamp = best0.stat().st_mtime_ns
    assert _train(data, copy, config, 3, "--resume") == 0
    assert best0.stat().st_mtime_ns == stamp  # cycle 0 was not trained again
    assert (copy / "metrics.json").read_text() == (run / "metrics.json").read_text()


def test_resume_refuses_pseudo_labels_of_another_pool(trained, data, tmp_path):
    run, config = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "cycle-1" / "cycle.json").unlink()
    chosen = json.loads((copy / "cycle-1" / "pseudo_labels.json").read_text())
    chosen["pool_size"] += 1
    (copy / "cycle-1" / "pseudo_labels.json").write_text(json.dumps(chosen))
    with pytest.raises(ValueError, match="pool changed"):
        _train(data, copy, config, 3, "--resume")


@pytest.mark.parametrize(("labels", "extra", "message"), [
    ([1] * 16, {}, r"0 \(NO_NUCLEUS\) absent from the training split"),
    ([0, 1] * 8, {"input_size": None}, "not 256x256 RGB tiles"),
    ([0, 1] * 8, {"unlabeled": "DATA"}, "the labelled dataset itself"),
    ([0, 1] * 8, {"unlabeled": "EMPTY"}, "holds no images"),
])
def test_bad_data_is_refused_before_training(tmp_path, labels, extra, message):
    root = tmp_path
    _write(root / "data", labels)
    (root / "EMPTY").mkdir()
    extra = {k: {"DATA": str(root / "data"), "EMPTY": str(root / "EMPTY")}.get(v, v)
             for k, v in extra.items()}
    config = _config(tmp_path, root, **extra)
    with pytest.raises(ValueError, match=message):
        _train(root, root / "run", config)
    assert not (root / "run" / "cycle-0").exists()


def test_test_items_and_a_folder_join_into_one_pool(data, tmp_path):
    rng = np.random.default_rng(2)
    with DatasetWriter(tmp_path / "ds", "nuclei-tiles", "HE", CLASSES) as writer:
        for n in range(3):
            writer.add(_tile(rng, True), label=1, slide_id="s", split="test" if n else None)
    test = split_test_pool(Dataset.open(tmp_path / "ds"), SIZE)
    folder = unlabelled_pool(data / "pool", SIZE)
    pool = join_sources([test, folder], SIZE)
    assert len(test) == 2 and len(folder) == 12 and len(pool) == 14
    assert pool.tile_id(2) == "1:crop_0.png" and pool.tile_id(3) == "1:crop_0.png@0,32"
    assert np.array_equal(pool.read_tile(3), folder.read_tile(1))
    assert np.array_equal(pool.read_tile(1), test.read_tile(1))


class _MeanModel(nn.Module):
    """p(NUCLEI) = mean of the normalised tile: a constant tile of value v gives v / 255."""

    def forward(self, x):
        p = x.mean((1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log(1 - p), torch.log(p)], dim=1)


def test_pseudo_label_keeps_only_confident_tiles_and_counts_them():
    values = {"a": 250, "b": 5, "c": 128, "d": 240, "e": 20}  # p(NUCLEI) = v / 255
    tiles = {k: np.full((SIZE, SIZE, 3), v, np.uint8) for k, v in values.items()}
    pool = TileSource(list(tiles), [(SIZE, SIZE)] * 5, tiles.__getitem__, SIZE, "fake")
    spec = ModelRegistry().get("nuclei-lenet")
    chosen = pseudo_label(_MeanModel(), pool, spec, torch.device("cpu"), 0.9, batch_size=2)
    assert chosen.tile_ids == ("a", "b", "d", "e") and list(chosen.indices) == [0, 1, 3, 4]
    assert list(chosen.labels) == [1, 0, 1, 0]
    assert np.allclose(chosen.confidences, [250 / 255, 250 / 255, 240 / 255, 235 / 255])
    assert chosen.counts(list(CLASSES.values())) == {"NO_NUCLEUS": 2, "NUCLEI": 2}
    assert chosen.pool_size == 5
    stricter = pseudo_label(_MeanModel(), pool, spec, torch.device("cpu"), 0.95)
    assert stricter.tile_ids == ("a", "b")


def test_select_pseudo_labels_is_strictly_above_the_threshold():
    probs = np.array([[0.8, 0.2], [0.1, 0.9], [0.55, 0.45], [0.19, 0.81]])
    indices, labels, confidence = select_pseudo_labels(probs, 0.8)
    assert list(indices) == [1, 3] and list(labels) == [1, 1]
    assert np.allclose(confidence, [0.9, 0.81])
    with pytest.raises(ValueError, match="threshold"):
        select_pseudo_labels(probs, 1.0)


def test_best_weights_are_the_best_epochs_not_the_last():
    class FakeTrainer:
        def __init__(self):
            self.model, self.best_epoch, self.history = nn.Linear(1, 1), None, {"epoch": []}

    trainer, keeper = FakeTrainer(), BestWeights()
    for epoch, best in enumerate([None, 0, 1, 1]):  # epoch 1 was the best, 2 was worse
        trainer.best_epoch = best
        keeper(trainer, epoch)
        with torch.no_grad():
            trainer.model.weight.fill_(float(epoch))  # "training" epoch `epoch`
        trainer.history["epoch"].append(epoch)
    assert keeper.state(trainer, None)["weight"].item() == 1.0
    trainer.best_epoch = 3
    assert keeper.state(trainer, None)["weight"].item() == 3.0


@pytest.mark.realdata
def test_real_tiles_make_an_unlabelled_pool(shared_data):
    pool = unlabelled_pool(shared_data / "nuclei_lgg_tiles" / "raw_image", 256)
    assert len(pool) == 144  # 36 tiles of 512 x 512, four 256-px squares each
    tile = pool.read_tile(1)
    assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
    assert pool.tile_id(1).endswith("@0,256")


def test_spec_is_the_declared_one_sized_for_the_tiles_and_names_the_data(data, tmp_path,
                                                                        monkeypatch):
    from napari_neuroseg.models import registry as registry_module
    from napari_neuroseg.models.checkpoint import save_checkpoint
    from training.tasks.nuclei_tiles.task import Config, _spec

    shipped = ModelRegistry(bundled=False).get("nuclei-lenet")
    shipped.extra["marker"] = "shipped"
    save_checkpoint(tmp_path / "nuclei-lenet", ModelRegistry().build(shipped), shipped)
    monkeypatch.setattr(registry_module, "bundled_weights_folder", lambda: tmp_path)
    assert ModelRegistry().get("nuclei-lenet").extra["marker"] == "shipped"

    spec = _spec(Config(input_size=SIZE), Dataset.open(data / "data"))
    assert "marker" not in spec.extra  # a shipped checkpoint's spec never leaks in
    assert spec.input.patch_size == (SIZE, SIZE) and spec.extra["stride"] == SIZE // 2
    assert spec.arch_kwargs["input_size"] == SIZE
    assert f"per {SIZE}x{SIZE} H&E window" in spec.description and "every 16 px" in spec.description
    assert spec.extra["training_data"] == "data (40 HE items)"
