import numpy as np
import pytest

from napari_neuroseg.analysis.slide import AnalysisError
from napari_neuroseg.analysis.volume import classify_slices, segment_volume
from napari_neuroseg.io import open_image
from napari_neuroseg.models.registry import DEFAULT_SPECS
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.spec import InputSpec, ModelSpec
from napari_neuroseg.samples.ct import write_ct_series
from napari_neuroseg.samples.mri import write_lgg_patient


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct") / "series"
    write_ct_series(folder, n_slices=6, size=64, spacing=(5.0, 3.0, 3.0))
    return open_image(folder)[0]


class Recorder:
    """Slice 'probability' = fraction of pixels above 60 HU; remembers its inputs."""

    def __init__(self):
        self.inputs = []

    def __call__(self, batch):
        self.inputs.append(batch.copy())
        return (batch > 60).mean(axis=(1, 2, 3))[:, None].astype(np.float32)


def test_ct_slices_are_brain_extracted_and_pooled_by_max(ct):
    spec = DEFAULT_SPECS["ct-metastasis"]
    predictor = Recorder()
    progress = []
    result = classify_slices(ct, predictor, spec, batch_size=4,
                             on_progress=lambda d, t: progress.append((d, t)))
    batch = np.concatenate(predictor.inputs)
    assert batch.shape == (6, 1, 256, 256)  # resized to the model's input
    assert batch.min() <= -999  # skull and air replaced by air: brain extraction ran
    assert batch.max() < 500  # no bone left (the phantom's skull is ~1000 HU)
    assert result.patient_probability == pytest.approx(result.probabilities.max())
    assert result.peak_plane == int(result.planes[np.argmax(result.probabilities)])
    np.testing.assert_allclose(np.diff(result.positions_mm), 5.0, rtol=1e-3)
    assert progress[-1] == (6, 6)
    assert result.threshold == spec.threshold == pytest.approx(0.10)


def test_threshold_override_changes_the_decision(ct):
    spec = DEFAULT_SPECS["ct-metastasis"]
    result = classify_slices(ct, Recorder(), spec, planes=range(1, 4))
    assert list(result.planes) == [1, 2, 3]
    high = classify_slices(ct, Recorder(), spec, threshold=1.1)
    assert not high.positive
    low = classify_slices(ct, Recorder(), spec, threshold=0.0)
    assert low.positive


def test_mri_stack_segmented_plane_by_plane_with_a_real_runner(tmp_path):
    folder = write_lgg_patient(tmp_path, patient_id="TCGA_XX_0002_20000101", n_slices=3,
                               size=64)
    image = open_image(folder)[0]
    spec = ModelSpec(
        name="toy-flair", task="semantic_segmentation", architecture="unet",
        arch_kwargs={"in_channels": 3, "out_channels": 1, "depth": 2, "base_features": 4},
        input=InputSpec(("pre", "FLAIR", "post"), {"kind": "zscore"}, (64, 64)),
        classes=("background", "FLAIR abnormality"), colors=("#000000", "#ffff00"),
        output="logit",
    )
    result = segment_volume(image, ModelRunner.from_spec(spec, device="cpu"), spec)
    assert result.probabilities.shape == (2, 3, 64, 64)
    assert result.labels.shape == (3, 64, 64)
    np.testing.assert_allclose(result.scale, image.scale)


def test_wrong_task_and_modality_are_refused(ct, tmp_path):
    with pytest.raises(AnalysisError, match="not a segmentation model"):
        segment_volume(ct, Recorder(), DEFAULT_SPECS["ct-metastasis"])
    with pytest.raises(AnalysisError, match="expects 3 channel"):
        segment_volume(ct, Recorder(), DEFAULT_SPECS["mri-flair-unet"])


def test_patient_probability_pools_only_the_slices_the_model_was_trained_on(tmp_path):
    """A model trained with the CT metastasis recipe's quality filter pools over usable slices
    only."""
    from dataclasses import replace

    from napari_neuroseg.models.registry import ModelRegistry
    from napari_neuroseg.preprocess.ct import slice_quality

    write_ct_series(tmp_path / "ct", n_slices=6, size=64)
    image = open_image(tmp_path / "ct")[0]
    spacing = (float(image.scale[1]), float(image.scale[2]))
    volume = np.asarray(image.levels[0])
    fractions = np.array([slice_quality(s, spacing=spacing).brain_fraction for s in volume])
    assert fractions.max() > fractions.min()
    cut = float(fractions.min() + fractions.max()) / 2
    base = ModelRegistry().get("ct-metastasis")
    base = replace(base, input=replace(base.input, patch_size=(32, 32)))

    scores = 1.0 - fractions  # what the stand-in model says per slice, by plane
    lookup = iter(scores)

    def by_plane(batch):
        return np.array([[next(lookup)] for _ in range(len(batch))])

    spec = replace(base, extra={**base.extra, "min_brain_fraction": cut})
    result = classify_slices(image, by_plane, spec, batch_size=4)
    usable = fractions >= cut
    assert np.array_equal(result.usable, usable) and 0 < usable.sum() < usable.size
    assert result.patient_probability == pytest.approx(scores[usable].max())
    assert result.patient_probability < scores.max()
    lookup = iter(scores)
    spec = replace(base, extra={**base.extra, "min_brain_fraction": 2.0})  # nothing passes
    none_usable = classify_slices(image, by_plane, spec, batch_size=4)
    assert none_usable.patient_probability == pytest.approx(scores.max())
    lookup = iter(scores)
    plain = classify_slices(image, by_plane, base, batch_size=4)
    assert plain.usable is None and plain.patient_probability == pytest.approx(scores.max())
