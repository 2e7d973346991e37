import numpy as np
import pytest

from napari_neuroseg.analysis.slide import AnalysisError, plan_slide, predict_slide
from napari_neuroseg.engine import Region
from napari_neuroseg.io import open_image
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.spec import InputSpec, ModelSpec
from napari_neuroseg.samples.ct import write_ct_series


def _spec(resolution=1.0, preprocessing=("tissue_mask",), **kw) -> ModelSpec:
    return ModelSpec(
        name="toy-tissue",
        task="semantic_segmentation",
        architecture="unet",
        arch_kwargs={"in_channels": 3, "out_channels": 2, "depth": 2, "base_features": 4},
        input=InputSpec(("R", "G", "B"), {"kind": "range", "scale": 255.0}, (64, 64), halo=8,
                        resolution=resolution, preprocessing=preprocessing),
        classes=("background", "tissue"),
        colors=("#000000", "#ff00ff"),
        output="probabilities",
        **kw,
    )


@pytest.fixture(scope="module")
def slide(synthetic_slide):
    return synthetic_slide


class Counting:
    """A predictor that returns 'tissue' probability = mean intensity, counting calls."""

    def __init__(self):
        self.tiles = 0

    def __call__(self, batch):
        self.tiles += len(batch)
        p = 1 - batch.mean(axis=1, keepdims=True) / 255.0
        return np.concatenate([1 - p, p], axis=1).astype(np.float32)


def test_plan_picks_the_level_for_the_model_resolution(slide):
    plan = plan_slide(slide, _spec(resolution=1.0))
    assert plan.choice.level == 1 and not plan.choice.resample
    assert plan.working_shape == (512, 512)
    assert plan.scale == (1.0, 1.0)
    assert plan.translate == pytest.approx((0.25, 0.25))  # centre of a 2x2 block of 0.5 µm px
    assert plan.tissue is not None and 0.2 < plan.tissue.mean() < 0.95


def test_tissue_skipping_computes_fewer_tiles(slide):
    every, tissue = Counting(), Counting()
    plan_all = plan_slide(slide, _spec(), tissue_only=False)
    plan_tissue = plan_slide(slide, _spec())
    r_all = predict_slide(plan_all, every)
    r_tissue = predict_slide(plan_tissue, tissue)
    assert r_tissue.counts.skipped > 0 and r_all.counts.skipped == 0
    assert tissue.tiles == r_tissue.counts.computed < every.tiles == r_all.counts.computed
    covered = r_tissue.covered
    np.testing.assert_allclose(r_tissue.probabilities[:, covered], r_all.probabilities[:, covered],
                               atol=1e-5)


def test_a_missing_level_is_resampled_lazily(slide):
    plan = plan_slide(slide, _spec(resolution=1.5))
    assert plan.choice.level == 1 and plan.choice.resample
    assert plan.working_shape == (341, 341)
    assert plan.scale == pytest.approx((1.5, 1.5))


def test_region_in_level0_pixels_maps_to_the_working_level(slide):
    plan = plan_slide(slide, _spec(), tissue_only=False)
    result = predict_slide(plan, Counting(), region=Region(0, 0, 256, 512))
    assert result.probabilities.shape[-2:] == (128, 256)


def test_macenko_is_fitted_when_the_spec_asks(slide):
    plain = plan_slide(slide, _spec(preprocessing=()))
    stained = plan_slide(slide, _spec(preprocessing=("macenko",)))
    assert plain.preprocess == () and len(stained.preprocess) == 1
    assert plain.preprocess_key != stained.preprocess_key
    tile = np.asarray(slide.levels[1][100:164, 100:164])
    out = stained.preprocess[0](tile)
    assert out.shape == tile.shape and out.dtype == np.uint8


def test_engine_options_carry_the_plan_and_the_spec(slide):
    plan = plan_slide(slide, _spec(preprocessing=("macenko", "tissue_mask"),
                                   extra={"overlap": 16}))
    options = plan.engine_options(batch_size=3, n_outputs=2)
    assert options.preprocess == plan.preprocess and len(options.preprocess) == 1
    assert options.tile_filter is plan.tile_filter is not None
    assert (options.batch_size, options.n_outputs, options.overlap) == (3, 2, 16)
    assert options.patch_size == (64, 64) and options.halo == 8
    assert options.mode == "dense" and options.blend == "gaussian"


def test_real_runner_through_the_engine(slide):
    spec = _spec(preprocessing=())
    runner = ModelRunner.from_spec(spec, device="cpu")
    plan = plan_slide(slide, spec)
    result = predict_slide(plan, runner, region=Region(0, 0, 256, 256))
    probs = result.probabilities
    assert probs.shape == (2, 128, 128)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert set(np.unique(result.labels)) <= {0, 1}


def test_a_volume_is_not_a_slide(tmp_path):
    write_ct_series(tmp_path / "ct", n_slices=3, size=32)
    with pytest.raises(AnalysisError, match="runs on slides"):
        plan_slide(open_image(tmp_path / "ct")[0], _spec())


def test_channel_mismatch_is_named(slide):
    spec = ModelSpec(**{**_spec().__dict__, "input": InputSpec(("FLAIR",), {"kind": "zscore"},
                                                               (64, 64))})
    with pytest.raises(AnalysisError, match="expects 1 channel"):
        plan_slide(slide, spec)


def test_a_32px_lenet_checkpoint_runs_32px_windows_through_the_plugin_path(slide, tmp_path):
    """nuclei-lenet trained on 32 px tiles (input_size 32): the checkpoint's spec, not the
    registry's 256 px one, sets the windows the plugin (ModelSource -> plan_slide ->
    predict_slide, as the Analyse widget and the batch command run it) slides over a slide."""
    import dataclasses

    import torch

    from napari_neuroseg.models.checkpoint import save_checkpoint
    from napari_neuroseg.models.registry import ModelRegistry
    from napari_neuroseg.models.source import ModelSource

    registry = ModelRegistry(bundled=False)
    base = registry.get("nuclei-lenet")
    spec = dataclasses.replace(
        base, arch_kwargs={**base.arch_kwargs, "input_size": 32},
        input=dataclasses.replace(base.input, patch_size=(32, 32)),
        extra={**base.extra, "stride": 16})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "lenet32", registry.build(spec), spec)

    source = ModelSource(str(tmp_path / "lenet32.safetensors"), device="cpu")
    plan = plan_slide(slide, source.spec(), tissue_only=False, stain_normalization=False)
    options = plan.engine_options()
    grid = options.grid(plan.working_shape)
    assert grid.patch_size == (32, 32) and grid.stride == (16, 16) and options.mode == "tile"
    assert options.blend == "constant"
    runner = source.runner()
    result = predict_slide(plan, runner, region=Region(0, 0, 128, 128))
    probs = result.probabilities
    assert probs.shape == (2, 128, 128)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    window = np.asarray(plan.array[48:80, 48:80]).transpose(2, 0, 1)[None].astype(np.float32)
    expected = runner(window)[0]  # the window centred on the core [56, 72)
    np.testing.assert_allclose(probs[:, 60, 60], expected, atol=1e-5)
