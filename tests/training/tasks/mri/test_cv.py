"""``python -m training cv-mri``: fold runs -> one pooled row per model setting and baseline."""

import json

import numpy as np
import pytest

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import load_checkpoint
from training.cli import main
from training.tasks.mri.cv import choose, flair_zscores, pool
from training.tasks.mri.volumes import PostProcess, patient_volumes, score_volumes


@pytest.fixture(scope="module")
def folds(tmp_path_factory, kaggle_lgg_dataset):
    """Four patients, two one-epoch fold runs of a 4-channel U-Net."""
    root = tmp_path_factory.mktemp("cv")
    data = kaggle_lgg_dataset(root, n_slices=3, size=32)
    config = root / "tiny.yaml"
    config.write_text("base_features: 2\nbatch_size: 4\naugment: false\nmonitor: train_loss\n"
                      "mode: min\nchannels_last: true\n")
    for fold in (0, 1):
        assert main(["mri", "--data", str(data), "--out", str(root / "runs" / f"fold{fold}"),
                     "--epochs", "1", "--device", "cpu", "--config", str(config),
                     "--set", "folds=2", "--set", f"fold={fold}"]) == 0
    return data, root / "runs"


def test_every_patient_is_scored_once_by_the_fold_that_did_not_train_on_it(folds, tmp_path,
                                                                            capsys):
    data, runs = folds
    shipped = tmp_path / "shipped"
    assert main(["cv-mri", "--data", str(data), "--run", f"tiny={runs}",
                 "--out", str(tmp_path), "--write", "tiny",
                 str(runs / "fold0" / "checkpoints" / "last"), str(shipped)]) == 0
    result = json.loads((tmp_path / "cv.json").read_text())
    rows = result["rows"]
    assert list(rows) == ["tiny, no clean-up", "tiny, clean-up", "tiny, tuned clean-up",
                          "baseline", "baseline clean-up"]
    studies = {v.patient for v in patient_volumes(Dataset.open(data))}
    for row in rows.values():
        assert set(row["volume_dice_by_patient"]) == studies and row["patients"] == 4
        assert row["tumour_slices"] + row["empty_slices"] == 12
        assert 0.0 <= row["volume_dice"] <= 1.0 and len(row["settings"]) == 2
        assert row["volume_dice_fold_min"] <= row["volume_dice_fold_max"]
    assert rows["tiny, no clean-up"]["settings"] == [">= 0.5, no clean-up"] * 2
    assert all(s.endswith("no clean-up") for s in rows["baseline"]["settings"])
    printed = capsys.readouterr().out
    assert "| tiny, tuned clean-up |" in printed
    recommended = result["recommended"]["tiny"]
    assert recommended["patients"] == 4 and set(recommended["postprocess"]) == {
        "threshold", "min_voxels", "drop_single_slice"}
    loaded = load_checkpoint(shipped)  # the fold-0 weights with the chosen clean-up
    assert loaded.spec.extra["postprocess"] == recommended["postprocess"]
    assert "out-of-fold" in loaded.spec.extra["postprocess_selection"]["how"]
    assert (tmp_path / "cv.md").read_text().startswith("| model, post-processing |")
    # the synthetic lesions are the brightest FLAIR voxels: the tuned baseline finds them
    assert rows["baseline"]["volume_dice"] > 0.9


def test_choose_takes_the_best_training_setting():
    """A score map where only threshold 0.6 separates lesion from background."""
    from training.tasks.mri.volumes import Volume

    truth = np.zeros((2, 8, 8), bool)
    truth[:, 2:5, 2:5] = True
    scores = np.where(truth, 0.65, 0.55).astype(np.float32)
    volume = Volume("p", [0, 1], np.array([0, 1]), 2, truth)
    post, dice = choose([volume], lambda v: scores, (0.5, 0.6, 0.7), ((0, False), (0, True)))
    assert post == PostProcess(0.6, 0, False) and dice == 1.0
    assert score_volumes([volume], lambda v: scores, PostProcess(0.5))["volume_dice"] < 1.0


def test_flair_zscores_are_standardised_inside_the_head(folds):
    data, _ = folds
    dataset = Dataset.open(data)
    volume = patient_volumes(dataset)[0]
    z = flair_zscores(dataset, volume).astype(np.float32)
    flair = np.stack([dataset.read_image(dataset.items[i])[..., 1] for i in volume.items])
    inside = z[flair > 0]
    assert z.shape == flair.shape
    assert abs(inside.mean()) < 1e-2 and inside.std() == pytest.approx(1.0, abs=1e-2)


def test_pool_means_over_patients_not_folds():
    def row(dice, tumour):
        return {"volume_dice_by_patient": dice, "volume_dice": float(np.mean(list(dice.values()))),
                "slice_dice_tumour": 0.5, "tumour_slices": tumour, "missed_tumour_slices": 1,
                "empty_slices": 4, "fp_empty_slices": 1, "predicted_voxels": 10,
                "reference_voxels": 10, "setting_text": "s"}

    pooled = pool([row({"a": 1.0}, 2), row({"b": 0.0, "c": 0.5}, 2)])
    assert pooled["volume_dice"] == pytest.approx(0.5)          # (1 + 0 + 0.5) / 3
    assert (pooled["volume_dice_fold_min"], pooled["volume_dice_fold_max"]) == (0.25, 1.0)
    assert pooled["fp_empty_share"] == 0.25 and pooled["missed_tumour_slices"] == 2


def test_choose_agrees_with_scoring_every_setting():
    """The fast grid (components labelled once per threshold) gives the same Dice as
    score_volumes setting by setting, on volumes with specks, single-slice blobs and gaps."""
    from training.tasks.mri.cv import CLEANUPS
    from training.tasks.mri.volumes import Volume

    rng = np.random.default_rng(3)
    volumes, scores = [], {}
    for p in range(3):
        truth = np.zeros((4, 24, 24), bool)
        truth[1:3, 5:12, 5:12] = True
        noisy = np.clip(truth * 0.7 + rng.random(truth.shape) * 0.45, 0, 1)
        items = list(range(4 * p, 4 * p + 4))
        volumes.append(Volume(f"p{p}", items, np.array([0, 1, 2, 5]), 6, truth))
        scores.update({i: noisy[k] for k, i in enumerate(items)})
    thresholds = (0.4, 0.5, 0.6)
    post, dice = choose(volumes, scores, thresholds, CLEANUPS)
    every = {(t, m, s): score_volumes(volumes, scores, PostProcess(t, m, s))["volume_dice"]
             for t in thresholds for m, s in CLEANUPS}
    assert dice == pytest.approx(max(every.values()))
    assert every[(post.threshold, post.min_voxels, post.drop_single_slice)] == pytest.approx(dice)
