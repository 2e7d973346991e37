"""``python -m training tissue`` end to end: GBM checkpoint -> LGG transfer -> a loadable model."""

import json

import numpy as np
import pytest
import torch

from napari_neuroseg.dataset import Dataset, DatasetWriter
from napari_neuroseg.models.checkpoint import load_checkpoint, save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from training.cli import main
from training.tasks._common import DataError, build_spec
from training.tasks.tissue import task as tissue
from training.tasks.tissue.data import stain_target

CLASSES = {0: "background", 1: "CT", 2: "LE", 3: "IT"}
HEMATOXYLIN, EOSIN = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
SIZE = 32
#: A small FC-DenseNet (size multiple 4) for fresh networks.
NET = {"first_filters": 8, "growth_rate": 4, "down_blocks": [2, 2], "bottleneck_layers": 2}
NET_YAML = "first_filters: 8\ngrowth_rate: 4\ndown_blocks: [2, 2]\nbottleneck_layers: 2\n"
SMALL = "batch_size: 8\nphase_layers: [0, 10]\nphase_epochs: [1, 1]\n"


def he_tile(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H&E-like RGB: haematoxylin density grows with the class id; column 0-3 is glass."""
    density = 0.2 + 0.25 * mask + rng.uniform(0, 0.2, mask.shape)
    od = density[..., None] * HEMATOXYLIN + rng.uniform(0.3, 0.6, mask.shape)[..., None] * EOSIN
    rgb = 240 * np.exp(-od)
    rgb[:, :4] = 245  # unstained glass annotated as tumour: the tissue mask makes it background
    return np.clip(rgb, 0, 255).astype(np.uint8)


def tile_mask(k: int) -> np.ndarray:
    """Stripes of CT and background, then LE (tiles 0-2) with IT (rare) in tile 0, else CT."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, :12], mask[:, 22:] = 1, 2 if k < 3 else 1
    if k == 0:
        mask[20:, 22:] = 3
    return mask


def write_dataset(root, splits=None, class_map=CLASSES, it_in=(0, 1, 2)):
    rng = np.random.default_rng(0)
    with DatasetWriter(root, "tissue", "HE", class_map) as writer:
        for s in range(3):
            for k in range(4):
                mask = tile_mask(k if s in it_in or k else 1)
                writer.add(he_tile(mask, rng), mask, patient_id=f"P{s}", slide_id=f"S{s}",
                           split=None if splits is None else splits[s], mpp=1.0)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("lgg") / "tiles")


@pytest.fixture(scope="module")
def gbm_checkpoint(tmp_path_factory):
    spec = build_spec("gbm-tissue-8", NET)
    path = tmp_path_factory.mktemp("gbm") / "gbm"
    save_checkpoint(path, ModelRegistry().build(spec), spec)
    return path


@pytest.fixture(scope="module")
def transfer_run(dataset, gbm_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "small.yaml").write_text(SMALL)
    code = main(["tissue", "--data", str(dataset), "--init", str(gbm_checkpoint),
                 "--out", str(root / "out"), "--epochs", "2", "--device", "cpu",
                 "--config", str(root / "small.yaml")])
    assert code == 0
    return root / "out"


def test_gbm_transfer_gives_a_four_class_model_the_plugin_runs(transfer_run, gbm_checkpoint):
    loaded = load_checkpoint(transfer_run / "checkpoints" / "best")
    assert loaded.spec.name == "lgg-tissue" and loaded.spec.classes == tuple(CLASSES.values())
    assert loaded.spec.arch_kwargs["growth_rate"] == 4 and loaded.model.out_channels == 4
    assert loaded.spec.input.preprocessing == ("macenko", "tissue_mask")
    assert loaded.spec.extra["macenko_target"]["target_stain_matrix"] is not None
    assert loaded.spec.extra["training_data"].endswith("HE items)")  # what it learnt from
    # the encoder's first layers never unfroze: they still hold the GBM weights; the GBM
    # head is among the last 10 layers that trained in the second epoch
    gbm = load_checkpoint(gbm_checkpoint).model.state_dict()
    trained = load_checkpoint(transfer_run / "checkpoints" / "last").model.state_dict()
    assert np.array_equal(trained["gbm.first.weight"], gbm["gbm.first.weight"])
    assert not np.array_equal(trained["gbm.head.weight"], gbm["gbm.head.weight"])
    probs = ModelRunner(loaded.model, loaded.spec, device="cpu")(
        np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32) * 255)
    assert probs.shape == (1, 4, SIZE, SIZE) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_history_has_frequencies_and_unfreezing(transfer_run):
    history = json.loads((transfer_run / "history.json").read_text())
    assert len(history["class_frequencies"]) == 2
    assert history["unfreeze_phase"] == [0, 1]
    assert history["trainable_parameters"][1] > history["trainable_parameters"][0]
    shares = history["class_frequencies"][0]
    assert list(shares) == list(CLASSES.values()) and sum(shares.values()) == pytest.approx(1)
    assert "dice/IT" in history and len(history["confusion_matrix"][0]) == 4


def test_metrics_report_and_plots(transfer_run):
    metrics = json.loads((transfer_run / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and set(metrics["dice"]) == set(CLASSES.values())
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == metrics["val_tiles"] * SIZE * SIZE
    frequencies = metrics["class_frequencies"]
    # IT tiles are drawn 20x: its pixel share grows far beyond the dataset's
    assert frequencies["expected_oversampled"]["IT"] > 2 * frequencies["dataset"]["IT"]
    # the glass columns were relabelled background (they were annotated CT)
    assert frequencies["dataset"]["background"] > 12 / SIZE
    assert len(metrics["class_weights"]) == 4 and min(metrics["class_weights"]) > 0
    assert 0 < metrics["max_probability"]["IT"] <= 1 and set(metrics["max_probability"]) == {
        "LE", "IT"}
    report = (transfer_run / "report.md").read_text()
    assert "mean_dice" in report and "GBM transfer" in report
    for name in ("history", "confusion_matrix", "per_class_recall", "rare_class_probabilities"):
        assert (transfer_run / "plots" / f"{name}.png").stat().st_size > 0


def test_evaluate_cli_gives_the_same_metrics(transfer_run, dataset, tmp_path):
    code = main(["evaluate", "--model", str(transfer_run / "checkpoints" / "best"),
                 "--data", str(dataset), "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["task"] == "tissue" and set(metrics["recall"]) == set(CLASSES.values())
    assert np.array(metrics["confusion_matrix"]).sum() == 12 * SIZE * SIZE


def test_evaluate_refuses_a_dataset_with_other_classes(transfer_run, tmp_path):
    other = {0: "background", 1: "necrosis", 2: "LE", 3: "IT"}
    data = Dataset.open(write_dataset(tmp_path / "other", class_map=other))
    loaded = load_checkpoint(transfer_run / "checkpoints" / "best")
    with pytest.raises(DataError, match="does not agree with the classes of checkpoint"):
        tissue.evaluate(loaded, data, "cpu")


def test_a_four_class_init_loads_as_is(transfer_run, dataset, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("batch_size: 8\nphase_layers: [null]\nphase_epochs: [1]\n"
                                     "tissue_mask: ignore\nstain_fit: tile\nloss: focal+dice\n"
                                     "oversampling: le-focused\n")
    code = main(["tissue", "--data", str(dataset), "--init",
                 str(transfer_run / "checkpoints" / "best"), "--out", str(tmp_path / "out"),
                 "--epochs", "1", "--device", "cpu", "--config", str(tmp_path / "c.yaml")])
    assert code == 0
    out = capsys.readouterr().out
    assert "loaded as it is" in out and "effective class frequencies" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # ignored glass pixels are left out of the confusion matrix
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["val_tiles"] * SIZE * (SIZE - 4)
    assert metrics["oversampling_rates"] == {"LE": 3.0}


def test_without_init_it_warns_that_no_gbm_weights_are_used(dataset, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(NET_YAML + "batch_size: 6\n"
                                     "stain_normalization: false\naugment: false\n"
                                     "oversampling: none\n")
    main(["tissue", "--data", str(dataset), "--epochs", "1", "--device", "cpu",
          "--config", str(tmp_path / "c.yaml")])
    out = capsys.readouterr().out
    assert "no GBM weights are used" in out
    metrics = json.loads(out[out.index("{\n"):])
    assert metrics["oversampling_rates"] == {}
    assert metrics["class_frequencies"]["expected_oversampled"] == pytest.approx(
        metrics["class_frequencies"]["dataset"])


def test_a_stain_reference_must_be_a_stained_tile(tmp_path):
    data = Dataset.open(write_dataset(tmp_path / "tiles"))
    hsv = {"saturation_min": 15, "value_max": 240, "kernel": 5}
    assert stain_target(data, data.items[5].id, 0, hsv).target_stain_matrix.shape == (2, 3)
    with pytest.raises(DataError, match="'nope' is not an item id"):
        stain_target(data, "nope", 0, hsv)
    with DatasetWriter(tmp_path / "glass", "tissue", "HE", CLASSES) as writer:
        writer.add(np.full((SIZE, SIZE, 3), 245, np.uint8), tile_mask(0), item_id="glass")
    with pytest.raises(DataError, match="reference tile 'glass' is unusable"):
        stain_target(Dataset.open(tmp_path / "glass"), None, 0, hsv)


def test_a_training_split_without_infiltrating_tumour_is_refused(tmp_path):
    data = write_dataset(tmp_path / "tiles", splits=["train", "train", "val"], it_in=(2,))
    with pytest.raises(DataError, match=r"3 \(IT\) absent from the training split"):
        main(["tissue", "--data", str(data), "--out", str(tmp_path / "out"), "--epochs", "1",
              "--device", "cpu"])
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_class_map_that_is_not_lgg_is_refused(tmp_path):
    data = write_dataset(tmp_path / "tiles", class_map={0: "background", 1: "CT", 2: "IT",
                                                         3: "LE"})
    with pytest.raises(DataError, match="does not match the tissue classes"):
        main(["tissue", "--data", str(data), "--epochs", "1", "--device", "cpu"])


def test_unknown_option_values_are_refused_before_the_data_is_read(tmp_path):
    (tmp_path / "c.yaml").write_text("tissue_mask: sometimes\n")
    with pytest.raises(ValueError, match="tissue_mask must be one of relabel, ignore, off"):
        main(["tissue", "--data", str(tmp_path / "missing"), "--config", str(tmp_path / "c.yaml")])


GBM_NAMES = ModelRegistry(bundled=False).get("gbm-tissue-8").classes


def write_sections(root, size=128):
    """Four 'sections' of the 8 GBM regions in vertical stripes; IT only on slides B and D."""
    rng = np.random.default_rng(1)
    with DatasetWriter(root, "tissue", "HE", dict(enumerate(GBM_NAMES))) as writer:
        for slide in "ABCD":
            mask = (np.arange(size)[None, :].repeat(size, 0) * 8 // size).astype(np.uint8)
            if slide in "AC":
                mask[mask == 2] = 3
            writer.add(rng.integers(40, 220, (size, size, 3), dtype=np.uint8), mask,
                       item_id=f"W9-1-1-{slide}.01", patient_id="W9", slide_id=f"W9-{slide}",
                       mpp=5.0)
    return root


CROPS = (NET_YAML + "crop_size: 32\ncrop_stride: 16\ndownscale: 2\nbatch_size: 8\n"
         "tissue_mask: \"off\"\nval_slides: [W9-D]\noptimizer: rmsprop\npresence_share: 0.02\n")


@pytest.fixture(scope="module")
def gbm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gbm8")
    data = write_sections(root / "sections")
    (root / "c.yaml").write_text(CROPS + "classes: gbm\nstain_normalization: false\n"
                                 "phase_layers: [null]\nphase_epochs: [1]\nprecise_bn: true\n")
    code = main(["tissue", "--data", str(data), "--out", str(root / "out"), "--epochs", "1",
                 "--device", "cpu", "--config", str(root / "c.yaml")])
    assert code == 0
    return root


def test_gbm_mode_trains_the_8_class_model_on_section_crops(gbm_run):
    out = gbm_run / "out"
    loaded = load_checkpoint(out / "checkpoints" / "last")
    assert loaded.spec.name == "gbm-tissue-8" and loaded.spec.classes == GBM_NAMES
    assert loaded.model.mapping is None and loaded.model.out_channels == 8
    assert loaded.spec.input.resolution == 10.0  # 5 µm/px sections halved
    assert loaded.spec.input.preprocessing == ("tissue_mask",)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_groups"] == ["W9-D"] and metrics["val_tiles"] == 1
    # the validation section is scored whole (128 px halved), every pixel once
    assert np.array(metrics["confusion_matrix"]).sum() == 64 * 64
    # crops whose IT covers >= 2 % are drawn 20x: IT's share of the draws grows
    shares = metrics["class_frequencies"]
    assert shares["expected_oversampled"]["infiltrating tumour"] > \
        1.5 * shares["dataset"]["infiltrating tumour"]
    report = (out / "report.md").read_text()
    assert "Majority baseline" in report and "held out: W9-D" in report
    # the last checkpoint holds batch-norm statistics recomputed over the 3 training sections'
    # crops (3 x 9 crops, batches of 8), which the final metrics scored
    assert "batch norms recomputed" in report
    sidecar = json.loads((out / "checkpoints" / "last.json").read_text())
    assert sidecar["metrics"]["precise_bn_batches"] == 4
    norm = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(norm.num_batches_tracked) == 4


def test_the_majority_baseline_scores_the_most_frequent_training_class(gbm_run):
    metrics = json.loads((gbm_run / "out" / "metrics.json").read_text())
    baseline = metrics["majority_baseline"]
    # stripes: IT became CT on slides A and C, so CT is the majority of the training pixels
    assert baseline["class"] == "cellular tumour"
    assert baseline["recall"]["cellular tumour"] == 1.0
    assert baseline["dice"]["necrosis"] == 0.0 and baseline["recall"]["necrosis"] == 0.0
    assert baseline["accuracy"] == pytest.approx(1 / 8, abs=0.02)


def test_lgg_mode_folds_the_gbm_regions_and_transfers(gbm_run, tmp_path):
    (tmp_path / "c.yaml").write_text(CROPS + "phase_layers: [0, 10]\nphase_epochs: [1, 1]\n")
    code = main(["tissue", "--data", str(gbm_run / "sections"), "--out", str(tmp_path / "out"),
                 "--init", str(gbm_run / "out" / "checkpoints" / "last"), "--epochs", "2",
                 "--device", "cpu", "--config", str(tmp_path / "c.yaml")])
    assert code == 0
    loaded = load_checkpoint(tmp_path / "out" / "checkpoints" / "last")
    assert loaded.spec.name == "lgg-tissue" and loaded.model.out_channels == 4
    assert loaded.spec.classes == ModelRegistry(bundled=False).get("lgg-tissue").classes
    assert loaded.spec.extra["classes_folded_from"] == list(GBM_NAMES)
    assert "no labelled LGG data" in loaded.spec.extra["training_note"]
    assert "macenko" in loaded.spec.input.preprocessing
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["dice"]) == set(loaded.spec.classes)
    # perinecrotic zone ... necrosis (4 of 8 stripes) count as cellular tumour, as does the
    # CT stripe: 5/8 of the validation section
    matrix = np.array(metrics["confusion_matrix"])
    ct = loaded.spec.classes.index("cellular tumour")
    assert matrix[ct].sum() == pytest.approx(5 / 8 * 64 * 64, abs=64)


def test_fold_lookup_keeps_le_it_and_background_and_folds_the_rest():
    from training.tasks.tissue.data import fold_lookup

    lgg = ModelRegistry(bundled=False).get("lgg-tissue").classes
    lookup = fold_lookup(GBM_NAMES, lgg, rest="cellular tumour")
    assert [lgg[i] for i in lookup] == ["background", "leading edge", "infiltrating tumour"] + \
        ["cellular tumour"] * 5


def test_unknown_held_out_slides_are_named(tmp_path):
    data = write_sections(tmp_path / "s", size=64)
    (tmp_path / "c.yaml").write_text("classes: gbm\nval_slides: [W9-Z]\n")
    with pytest.raises(DataError, match=r"val_slides \['W9-Z'\] are not slide ids"):
        main(["tissue", "--data", str(data), "--config", str(tmp_path / "c.yaml"),
              "--device", "cpu"])


def test_evaluate_folds_gbm_sections_and_shrinks_them_to_the_checkpoints_resolution(gbm_run):
    data = Dataset.open(gbm_run / "sections")
    gbm = load_checkpoint(gbm_run / "out" / "checkpoints" / "last")
    summary = tissue.evaluate(gbm, data, "cpu")
    assert np.array(summary["confusion_matrix"]).sum() == 4 * 64 * 64  # 4 sections, halved
    lgg_spec = build_spec("lgg-tissue", NET)
    lgg = load_checkpoint(gbm_run / "out" / "checkpoints" / "last")
    lgg.model.replace_head(4)
    from dataclasses import replace

    lgg.spec = replace(lgg_spec, input=replace(lgg_spec.input, preprocessing=("tissue_mask",),
                                               resolution=10.0),
                       extra={**lgg_spec.extra, "classes_folded_from": list(GBM_NAMES)})
    folded = tissue.evaluate(lgg, data, "cpu")
    matrix = np.array(folded["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == 4 * 64 * 64
    assert matrix[lgg.spec.classes.index("cellular tumour")].sum() == pytest.approx(
        (5 * 4 + 2) / 8 * 64 * 64, abs=4 * 64)  # CT + 4 folded stripes; IT->CT on A and C
