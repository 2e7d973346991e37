"""ModelRunner: normalisation on the device, output conventions per task, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from napari_neuroseg.models.checkpoint import save_checkpoint
from napari_neuroseg.models.registry import ARCHITECTURES, DEFAULT_SPECS, ModelRegistry
from napari_neuroseg.models.runner import ModelRunner, RunnerError, normalize
from napari_neuroseg.models.spec import ModelSpec


@pytest.fixture
def rgb_batch() -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.random((5, 3, 12, 10)) * 255).astype(np.float32)


def _runner(registry, name, **kwargs) -> ModelRunner:
    return ModelRunner.from_spec(name, registry, device="cpu", **kwargs)


def _forward(runner: ModelRunner, batch: np.ndarray):
    x = normalize(torch.from_numpy(batch), runner.spec.input.normalization)
    with torch.no_grad():
        return runner.model(x)


# --- normalisation -------------------------------------------------------------------------


def test_range_and_ct_window_normalisation():
    x = torch.tensor([0.0, 51.0, 255.0]).reshape(1, 1, 1, 3)
    unit = normalize(x, {"kind": "range", "scale": 255.0})
    assert unit.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    signed = normalize(x, {"kind": "range", "scale": 255.0, "out_range": [-1, 1]})
    assert signed.flatten().tolist() == pytest.approx([-1.0, -0.6, 1.0])
    hu = torch.tensor([-1000.0, 0.0, 40.0, 60.0, 80.0, 3000.0]).reshape(1, 1, 1, 6)
    window = normalize(hu, {"kind": "ct_window", "center": 40, "width": 80})
    assert window.flatten().tolist() == pytest.approx([0.0, 0.0, 0.5, 0.75, 1.0, 1.0])


def test_zscore_per_image_and_channel():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * torch.tensor([1.0, 10.0, 100.0]).reshape(
        1, 3, 1, 1
    )
    z = normalize(x, {"kind": "zscore"})
    assert torch.allclose(z.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(z.std(dim=(2, 3), unbiased=False), torch.ones(2, 3), atol=1e-4)
    whole = normalize(x, {"kind": "zscore", "per_channel": False})
    assert torch.allclose(whole.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert not torch.allclose(whole, z)
    flat = normalize(torch.full((1, 1, 4, 4), 7.0), {"kind": "zscore"})
    assert torch.equal(flat, torch.zeros(1, 1, 4, 4))


def test_mean_std_and_unknown_kinds():
    x = torch.full((1, 2, 2, 2), 255.0)
    norm = {"kind": "mean_std", "scale": 255.0, "mean": [0.5, 0.25], "std": [0.5, 0.25]}
    out = normalize(x, norm)
    assert out[0, 0].unique().tolist() == [1.0] and out[0, 1].unique().tolist() == [3.0]
    with pytest.raises(ValueError, match=r"unknown normalization kind 'minmax'"):
        normalize(x, {"kind": "minmax"})


def test_a_spec_with_a_bad_normalisation_is_refused(tiny_registry):
    spec = tiny_registry.get("tiny-seg")
    for norm, message in [
        ({"kind": "mean_std", "mean": [0.5], "std": [0.5]}, "one value per channel"),
        ({"kind": "mean_std", "mean": [0, 0, 0]}, "needs std"),
        ({"kind": "ct_window", "center": 40, "width": 0}, "must be positive"),
        ({"kind": "sqrt"}, "unknown kind"),
    ]:
        bad = ModelSpec.from_dict(
            {**spec.to_dict(), "input": {**spec.to_dict()["input"], "normalization": norm}}
        )
        with pytest.raises(RunnerError, match=rf"'tiny-seg': normalization.*{message}"):
            ModelRunner(tiny_registry.build(bad), bad, device="cpu")


# --- output conventions ------------------------------------------------------------------


def test_semantic_segmentation_gives_softmax_probabilities(tiny_registry, rgb_batch):
    runner = _runner(tiny_registry, "tiny-seg")
    out = runner(rgb_batch)
    assert out.dtype == np.float32 and out.shape == (5, 4, 12, 10)
    expected = torch.softmax(_forward(runner, rgb_batch), dim=1).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert runner.output_channels == 4 and runner.dense and not runner.amp


def test_one_channel_sigmoid_becomes_two_classes(tiny_registry, rgb_batch):
    runner = _runner(tiny_registry, "tiny-binary")
    with torch.no_grad():
        runner.model.weight.copy_(torch.tensor([1.0, -1.0, 0.5]).reshape(1, 3, 1, 1))
        runner.model.bias.fill_(-0.25)
    out = runner(rgb_batch)
    unit = rgb_batch / 255.0
    p = 1 / (1 + np.exp(-(unit[:, 0] - unit[:, 1] + 0.5 * unit[:, 2] - 0.25)))
    assert out.shape == (5, 2, 12, 10) and runner.output_channels == 2
    np.testing.assert_allclose(out[:, 1], p, rtol=1e-5)
    np.testing.assert_allclose(out[:, 0], 1 - p, rtol=1e-5)


def test_tile_and_slice_classification(tiny_registry, rgb_batch):
    tiles = _runner(tiny_registry, "tiny-tiles")
    out = tiles(rgb_batch)
    assert out.shape == (5, 2) and not tiles.dense and tiles.output_channels == 2
    expected = torch.softmax(_forward(tiles, rgb_batch), dim=1).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)

    slices = _runner(tiny_registry, "tiny-slice")
    hu = np.linspace(-200, 300, 4 * 1 * 6 * 6, dtype=np.float32).reshape(4, 1, 6, 6)
    prob = slices(hu)
    assert prob.shape == (4, 1) and slices.output_channels == 1
    window = np.clip((hu - 0.0) / 80.0, 0, 1).mean(axis=(1, 2, 3))
    weight, bias = slices.model.fc.weight.item(), slices.model.fc.bias.item()
    np.testing.assert_allclose(prob[:, 0], 1 / (1 + np.exp(-(weight * window + bias))), rtol=1e-5)


def test_instance_segmentation_layout(tiny_registry, rgb_batch):
    runner = _runner(tiny_registry, "tiny-hover")
    out = runner(rgb_batch)
    raw = _forward(runner, rgb_batch)
    assert out.shape == (5, 4, 12, 10) and runner.output_channels == 4
    np.testing.assert_allclose(out[:, :2], torch.softmax(raw["np"], 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(out[:, 2:4], raw["hv"].numpy(), atol=1e-6)

    typed = _runner(tiny_registry, "tiny-hover-types")
    out = typed(rgb_batch)
    assert out.shape == (5, 7, 12, 10) and typed.output_channels == 7
    np.testing.assert_allclose(out[:, 4:].sum(axis=1), 1.0, atol=1e-5)


def test_image_translation_is_rescaled_to_unit_range(tiny_registry, rgb_batch):
    runner = _runner(tiny_registry, "tiny-translate")
    out = runner(rgb_batch)
    expected = (_forward(runner, rgb_batch).numpy() + 1) / 2
    assert out.shape == (5, 3, 12, 10) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_chunks_give_the_same_result_and_input_is_untouched(tiny_registry, rgb_batch):
    before = rgb_batch.copy()
    whole = _runner(tiny_registry, "tiny-seg", batch_size=64)(rgb_batch)
    chunked = _runner(tiny_registry, "tiny-seg", batch_size=2)(rgb_batch)
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-7)  # kernels vary by N
    np.testing.assert_array_equal(rgb_batch, before)
    as_uint8 = _runner(tiny_registry, "tiny-seg")(rgb_batch.astype(np.uint8))
    expected = _runner(tiny_registry, "tiny-seg")(rgb_batch.astype(np.uint8).astype(np.float32))
    np.testing.assert_array_equal(as_uint8, expected)


def test_empty_batches(tiny_registry):
    assert _runner(tiny_registry, "tiny-seg")(np.zeros((0, 3, 8, 8), np.float32)).shape == (
        0, 4, 8, 8
    )  # fmt: skip
    assert _runner(tiny_registry, "tiny-tiles")(np.zeros((0, 3, 8, 8))).shape == (0, 2)


# --- errors ------------------------------------------------------------------------------


def test_bad_batches_are_named_clearly(tiny_registry, rgb_batch):
    runner = _runner(tiny_registry, "tiny-seg")
    with pytest.raises(RunnerError, match=r"'tiny-seg' expects 3 input channel\(s\) \(R, G, B\)"
                                          r", got 1"):  # fmt: skip
        runner(rgb_batch[:, :1])
    with pytest.raises(RunnerError, match=r"'tiny-seg' needs NCHW batches, got shape"):
        runner(rgb_batch[0])
    bad = rgb_batch.copy()
    bad[3, 1, 2, 2] = np.nan
    bad[4, 0, 0, 0] = np.inf
    with pytest.raises(RunnerError, match=r"2 NaN/infinite value\(s\) \(in item\(s\) \[3, 4\]\)"):
        runner(bad)
    with pytest.raises(RunnerError, match=r"not real numbers"):
        runner(rgb_batch.astype(np.complex64))
    with pytest.raises(ValueError, match=r"batch_size must be at least 1"):
        _runner(tiny_registry, "tiny-seg", batch_size=0)


def test_network_that_does_not_match_its_spec(tiny_registry, rgb_batch):
    spec = tiny_registry.get("tiny-seg")
    three = ModelSpec.from_dict(
        {**spec.to_dict(), "classes": ["a", "b", "c"], "colors": ["#000000"] * 3}
    )
    runner = ModelRunner(tiny_registry.build(spec), three, device="cpu")
    with pytest.raises(RunnerError, match=r"'tiny-seg'.*gave output \(5, 4, 12, 10\).*"
                                          r"expected \(5, 3, 12, 10\)"):  # fmt: skip
        runner(rgb_batch)
    hover = ModelRunner(tiny_registry.build("tiny-seg"), tiny_registry.get("tiny-hover"), "cpu")
    with pytest.raises(RunnerError, match=r"should output a dict with 'np' and 'hv'"):
        hover(rgb_batch)


# --- construction ------------------------------------------------------------------------


def test_from_spec_is_seeded_and_leaves_the_global_rng_alone(tiny_registry, rgb_batch):
    state = torch.get_rng_state()
    a = _runner(tiny_registry, "tiny-seg", seed=1)(rgb_batch)
    b = _runner(tiny_registry, "tiny-seg", seed=1)(rgb_batch)
    c = _runner(tiny_registry, "tiny-seg", seed=2)(rgb_batch)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_from_checkpoint(tiny_registry, tiny_seg_model, rgb_batch, tmp_path):
    spec = tiny_registry.get("tiny-seg")
    expected = ModelRunner(tiny_seg_model, spec, device="cpu")(rgb_batch)
    save_checkpoint(tmp_path / "seg", tiny_seg_model, spec)
    runner = ModelRunner.from_checkpoint(tmp_path / "seg.json", device="cpu",
                                         registry=tiny_registry, batch_size=2)  # fmt: skip
    assert runner.spec == spec and runner.batch_size == 2
    np.testing.assert_allclose(runner(rgb_batch), expected, rtol=1e-5, atol=1e-7)


def _importable(name: str) -> bool:
    module = ARCHITECTURES[DEFAULT_SPECS[name].architecture].partition(":")[0]
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("name", list(DEFAULT_SPECS))
def test_declared_specs_fit_their_architectures(name):
    if not _importable(name):
        pytest.skip(f"architecture of {name} not written yet")
    cls = ModelRegistry().check(name)
    assert cls.__name__ == ARCHITECTURES[DEFAULT_SPECS[name].architecture].partition(":")[2]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DEFAULT_SPECS))
def test_declared_models_follow_the_output_convention(name):
    if not _importable(name):
        pytest.skip(f"architecture of {name} not written yet")
    spec = DEFAULT_SPECS[name]
    side = 256 if spec.architecture == "lenet5" else 64  # LeNet-5 has a fixed input size
    runner = ModelRunner.from_spec(spec, ModelRegistry(), device="cpu")
    batch = np.full((1, len(spec.input.channels), side, side), 100.0, np.float32)
    batch[..., : side // 2, :] = 20.0
    out = runner(batch)
    expected = (1, runner.output_channels, side, side) if runner.dense else (1, 2)
    if spec.task == "slice_classification":
        expected = (1, 1)
    assert out.shape == expected and out.dtype == np.float32 and np.isfinite(out).all()
    if spec.task in ("semantic_segmentation", "tile_classification"):
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
        assert runner.output_channels == spec.n_classes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runner_with_amp_matches_cpu(tiny_registry, tiny_seg_model, rgb_batch):
    spec = tiny_registry.get("tiny-seg")
    cpu = ModelRunner(tiny_seg_model, spec, device="cpu")(rgb_batch)
    gpu_runner = ModelRunner(tiny_seg_model, spec, device="cuda", amp=True)
    out = gpu_runner(rgb_batch)
    assert gpu_runner.amp and out.dtype == np.float32
    np.testing.assert_allclose(out, cpu, atol=2e-2)
    exact = ModelRunner(tiny_seg_model, spec, device="cuda", amp=False)(rgb_batch)
    np.testing.assert_allclose(exact, cpu, atol=1e-4)
