"""The CT widget's pure helpers: positions, decision, windows, Grad-CAM, brain masks, volume."""

import dataclasses

import dask.array as da
import numpy as np
import pytest
import torch

from napari_neuroseg.analysis.ct_view import (
    brain_masks,
    decision_text,
    gradcam_target,
    iter_classify,
    mask_volume_ml,
    outward_planes,
    patient_decision,
    slice_gradcam,
    slice_positions_mm,
    slice_thicknesses_mm,
    window_limits,
)
from napari_neuroseg.analysis.volume import SliceClassification, classify_slices
from napari_neuroseg.io import LazyImage, open_image
from napari_neuroseg.models.lenet import LeNet5
from napari_neuroseg.models.registry import DEFAULT_SPECS
from napari_neuroseg.preprocess.ct import brain_mask
from napari_neuroseg.samples.ct import write_ct_series


def tiny_spec(size: int = 32):
    """ct-metastasis on a LeNet-5 that reads ``size`` x ``size`` slices (fast on a CPU)."""
    spec = DEFAULT_SPECS["ct-metastasis"]
    return dataclasses.replace(
        spec, name="ct-tiny", architecture="lenet5",
        arch_kwargs={"in_channels": 1, "n_classes": 1, "input_size": size, "dropout": 0.0},
        input=dataclasses.replace(spec.input, patch_size=(size, size)))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    write_ct_series(folder, n_slices=6, size=48, spacing=(8.0, 4.0, 4.0), lesion=True)
    return open_image(folder)[0]


def _volume(n=5, scale=(2.0, 1.0, 1.0), translate=(10.0, 0.0, 0.0), **metadata):
    levels = [da.zeros((n, 8, 8), dtype=np.float32)]
    return LazyImage(levels=levels, axes="zyx", scale=scale, unit="mm", name="v", modality="CT",
                     source="v", translate=translate, metadata=metadata)


def test_positions_come_from_the_reader_when_it_recorded_them():
    np.testing.assert_allclose(slice_positions_mm(_volume()), [10, 12, 14, 16, 18])
    uneven = [0.0, 4.0, 8.0, 9.0, 16.0]
    np.testing.assert_allclose(slice_positions_mm(_volume(slice_positions_mm=uneven)), uneven)
    resampled = _volume(slice_positions_mm=uneven, resampled={"spacing_mm": 2.0})
    np.testing.assert_allclose(slice_positions_mm(resampled), [10, 12, 14, 16, 18])
    wrong_length = _volume(slice_positions_mm=uneven[:3])
    np.testing.assert_allclose(slice_positions_mm(wrong_length), [10, 12, 14, 16, 18])


def test_slice_thickness_and_mask_volume_follow_uneven_spacing():
    np.testing.assert_allclose(slice_thicknesses_mm([0, 2, 4, 6]), [2, 2, 2, 2])
    np.testing.assert_allclose(slice_thicknesses_mm([0, 4, 8, 15]), [4, 4, 5.5, 7])
    mask = np.zeros((4, 10, 10), bool)
    mask[:, :5, :4] = True  # 20 pixels of 0.5 x 0.5 mm = 5 mm2 per slice
    assert mask_volume_ml(mask, [0, 4, 8, 15], (0.5, 0.5)) == pytest.approx(5 * 20.5 / 1000)
    with pytest.raises(ValueError):
        slice_thicknesses_mm([3.0])


def test_decision_follows_the_threshold():
    result = SliceClassification(planes=np.arange(4), probabilities=np.array([0.1, 0.7, 0.3, .2]),
                                 positions_mm=np.array([0.0, 5.0, 10.0, 15.0]),
                                 patient_probability=0.7, threshold=0.5)
    decision = patient_decision(result)
    assert decision.positive and decision.peak_plane == 1 and decision.peak_position_mm == 5.0
    assert decision_text(decision).startswith("POSITIVE: max p = 0.700 >= 0.50")
    assert patient_decision(result, 0.7).positive  # at the threshold counts as positive
    low = patient_decision(result, 0.71)
    assert not low.positive and decision_text(low).startswith("NEGATIVE: max p = 0.700 < 0.71")
    assert "peak slice 1, z = 5.0 mm" in decision_text(low)


def test_window_presets_are_centre_plus_minus_half_width():
    assert window_limits("brain") == (0.0, 80.0)
    assert window_limits("subdural") == (-32.5, 182.5)
    assert window_limits("bone") == (-800.0, 2000.0)
    assert window_limits((50.0, 100.0)) == (0.0, 100.0)
    with pytest.raises(KeyError):
        window_limits("lung")


def test_outward_planes_start_at_the_current_slice():
    assert outward_planes(2, 5) == [2, 1, 3, 0, 4]
    assert outward_planes(9, 3) == [2, 1, 0]
    assert sorted(outward_planes(0, 7)) == list(range(7))


def test_iter_classify_grows_to_classify_slices(phantom):
    spec = tiny_spec()

    def predictor(batch):  # a slice's mean input: any deterministic per-slice value will do
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True) / 1000.0

    parts = list(iter_classify(phantom, predictor, spec, chunk=4))
    assert [len(p.planes) for p in parts] == [4, 6]
    whole = classify_slices(phantom, predictor, spec)
    np.testing.assert_allclose(parts[-1].probabilities, whole.probabilities)
    np.testing.assert_allclose(parts[-1].positions_mm, slice_positions_mm(phantom))
    assert parts[-1].threshold == spec.threshold


def test_gradcam_target_and_slice_heatmap(phantom):
    spec = tiny_spec()
    torch.manual_seed(0)
    model = LeNet5(in_channels=1, n_classes=1, input_size=32, dropout=0.0).eval()
    assert gradcam_target(model, spec) == "features.6"
    assert gradcam_target(model, dataclasses.replace(spec, extra={"gradcam_layer": "x"})) == "x"
    resnet_like = torch.nn.Module()
    resnet_like.layer4 = torch.nn.Conv2d(1, 1, 1)
    assert gradcam_target(resnet_like, spec) == "layer4"
    hu = np.asarray(phantom.levels[0][3])
    cam = slice_gradcam(model, spec, hu, (4.0, 4.0))
    assert cam.shape == hu.shape and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0


def test_brain_masks_in_the_order_asked(phantom):
    volume = phantom.levels[0]
    out = list(brain_masks(volume, (4.0, 4.0), planes=[3, 2]))
    assert [z for z, _ in out] == [3, 2]
    np.testing.assert_array_equal(out[0][1], brain_mask(np.asarray(volume[3]), spacing=4.0))
    assert out[0][1].any()
    stop = list(brain_masks(volume, (4.0, 4.0), should_stop=lambda: True))
    assert stop == []
