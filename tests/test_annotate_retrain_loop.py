"""The whole loop in one viewer: predict, correct, export, retrain in a subprocess, reload.

Two synthetic LGG patients are segmented by a small untrained U-Net (MRI widget), their labels
are corrected (the layer's data set to the true lesion, as painting would leave it), exported
one after the other into one dataset (Export widget), the model is retrained from that
checkpoint with ``python -m training mri`` in its own process (Train widget), and the new
checkpoint, handed over by the Train widget, segments the corrected patient again: its
probabilities must move toward the correction (soft Dice up, lesion probability up against
the background).
"""

import dataclasses

import numpy as np
import pytest

from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.samples.mri import write_lgg_patient
from napari_neuroseg.widgets._model_picker import FROM_FILE
from napari_neuroseg.widgets.export_widget import ExportWidget
from napari_neuroseg.widgets.mri_widget import MRIWidget
from napari_neuroseg.widgets.train_widget import TrainWidget

pytestmark = [pytest.mark.gui, pytest.mark.slow]
PLUGIN = "napari-neuroseg"
TIMEOUT = 120000
OPTIONS = ("base_features: 8\nbatch_size: 4\naugment: false\nlr: 0.003\nnum_workers: 0\n"
           "monitor: train_loss\nmode: min\n")


def _soft_dice(probability: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (probability * truth).sum() / (probability.sum() + truth.sum()))


def _contrast(probability: np.ndarray, truth: np.ndarray) -> float:
    """Mean lesion probability inside the correction minus outside it."""
    return float(probability[truth].mean() - probability[~truth].mean())


def _untrained_checkpoint(path):
    spec = ModelRegistry().get("mri-flair-unet")
    spec = dataclasses.replace(spec, arch_kwargs={**spec.arch_kwargs, "base_features": 8},
                               synthetic=True)
    import torch

    torch.manual_seed(0)
    save_checkpoint(path, ModelRegistry().build(spec), spec)
    return path.with_suffix(".safetensors")


def _segment(mri, qtbot, layer, checkpoint):
    mri.layer.value = layer
    mri.picker.model.value = FROM_FILE
    mri.picker.file.value = checkpoint
    mri.picker.device.value = "cpu"
    measured = getattr(mri, "last_measure", None)
    mri.segment_button.clicked.emit()
    qtbot.waitUntil(lambda: not mri.running, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: getattr(mri, "last_measure", None) is not measured,
                    timeout=TIMEOUT)  # the clean-up worker has reported too
    assert mri.heatmap_layer is not None
    return np.asarray(mri.heatmap_layer.data).copy()


def test_correct_export_retrain_and_the_model_moves_toward_the_correction(
        make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    mri, export, train = MRIWidget(viewer), ExportWidget(viewer), TrainWidget(viewer)
    for w in (mri, export, train):
        viewer.window.add_dock_widget(w)
    first = _untrained_checkpoint(tmp_path / "untrained")
    dataset = tmp_path / "corrections"
    corrections, before = {}, {}
    for n in range(2):
        folder = write_lgg_patient(tmp_path / "patients", patient_id=f"TCGA_XX_{n:04d}_20000101",
                                   n_slices=12, size=64, seed=n)
        viewer.open(str(folder), plugin=PLUGIN)
        flair = viewer.layers[f"{folder.name} FLAIR"]
        truth = np.asarray(viewer.layers[f"{folder.name} FLAIR abnormality"].data) > 0
        before[n] = _segment(mri, qtbot, flair, first)
        mri.labels_layer.data = truth.astype(np.uint8)  # the painted correction
        corrections[n] = truth
        export.labels_layer.value = mri.labels_layer
        export.image_layer.value = flair
        export.task.value = "mri"
        export.classes.value = "0: background, 1: FLAIR abnormality"
        export.folder.value = dataset
        export.patient_id.value = folder.name
        export.export()
        qtbot.waitUntil(lambda: not export.running, timeout=TIMEOUT)
        assert export.last_report.added == 12, export.status.value  # one item per slice
    handed = []
    train.on_checkpoint.append(handed.append)
    train.data.value = dataset
    train.init.value = first
    train.out.value = tmp_path / "run"
    train.epochs.value = 50
    train.device.value = "cpu"
    train.config.value = OPTIONS
    assert "python -m training mri" in train.command.value
    train.start()
    qtbot.waitUntil(lambda: not train.running and bool(handed), timeout=4 * TIMEOUT)
    # the Train widget handed the new checkpoint to the docked MRI widget's picker
    assert mri.picker.model.value == FROM_FILE and str(mri.picker.file.value) == str(handed[0])
    assert "now used by" in train.checkpoint.value
    after = _segment(mri, qtbot, viewer.layers["TCGA_XX_0000_20000101 FLAIR"], handed[0])
    truth = corrections[0]
    assert truth.sum() > 20
    old, new = _soft_dice(before[0], truth), _soft_dice(after, truth)
    gap_old, gap_new = _contrast(before[0], truth), _contrast(after, truth)
    print(f"soft Dice against the correction {old:.3f} -> {new:.3f}; lesion - background "
          f"probability {gap_old:.3f} -> {gap_new:.3f}")
    assert new > 2 * old and gap_new > gap_old + 0.1, (old, new, gap_old, gap_new)
