"""Inference backends: exported networks give torch's outputs, exports are cached by weights,
and an automatic choice falls back to torch when a network cannot be exported."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from napari_neuroseg.engine import EngineOptions, predict_region
from napari_neuroseg.models import ModelRegistry
from napari_neuroseg.models import backends as bk
from napari_neuroseg.models.backends import (
    CPU_DEFAULT,
    BackendError,
    prune_cache,
    resolve_backend,
    weights_digest,
)
from napari_neuroseg.models.runner import ModelRunner

CPU = torch.device("cpu")
EXPORTED = [b for b in bk.EXPORTED if bk._installed(b)]
needs_runtime = pytest.mark.skipif(not EXPORTED, reason="neither onnxruntime nor openvino")

# Small versions of every registry architecture (fast exports), at their spec's patch size.
SMALL = {
    "gbm-tissue-8": {"first_filters": 8, "growth_rate": 4, "down_blocks": [1, 1],
                     "bottleneck_layers": 1},
    "mri-flair-unet": {"depth": 3, "base_features": 4},
    "mri-flair-transunet": {"base_features": 4, "embed_dim": 32, "num_layers": 1},
    "nuclei-hovernet": {"base_features": 8, "encoder_depth": 2},
    "nuclei-lenet": {},
    "ct-metastasis": {"hidden": 16},
    "ihc-to-he": {"base_features": 8, "n_blocks": 1},
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_NEUROSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(bk.ENV_VAR, raising=False)
    return tmp_path / "cache" / "backends"


def _runner(name: str, backend: str, seed: int = 0) -> ModelRunner:
    registry = ModelRegistry()
    spec = registry.get(name)
    spec = replace(spec, arch_kwargs={**spec.arch_kwargs, **SMALL[name]})
    return ModelRunner.from_spec(spec, registry, device="cpu", backend=backend, seed=seed)


def _batch(runner: ModelRunner, n: int) -> np.ndarray:
    h, w = runner.spec.input.patch_size
    rng = np.random.default_rng(1)
    return rng.uniform(0, 255, (n, len(runner.spec.input.channels), h, w)).astype(np.float32)


def test_auto_is_the_cpu_default_and_torch_elsewhere(monkeypatch):
    expected = CPU_DEFAULT if bk._installed(CPU_DEFAULT) else "torch"
    assert resolve_backend("auto", CPU) == expected
    assert resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    monkeypatch.setenv(bk.ENV_VAR, "channels-last")
    assert resolve_backend("auto", CPU) == "channels-last"
    assert resolve_backend("torch", CPU) == "torch"


def test_auto_keeps_tiny_networks_on_torch():
    assert "lenet5" in bk.CPU_TORCH_ARCHITECTURES
    assert resolve_backend("auto", CPU, "lenet5") == "torch"
    assert _runner("nuclei-lenet", "auto").backend == "torch"
    assert resolve_backend("onnxruntime", CPU, "lenet5") == "onnxruntime"  # asked for


def test_bad_requests_are_clear_errors(monkeypatch):
    with pytest.raises(BackendError, match="unknown inference backend 'tensorrt'"):
        resolve_backend("tensorrt", CPU)
    with pytest.raises(BackendError, match="runs on the CPU only"):
        resolve_backend("openvino", torch.device("cuda", 0))
    monkeypatch.setattr(bk, "_installed", lambda backend: backend not in bk.EXPORTED)
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        resolve_backend("onnxruntime", CPU)
    # auto never asks for a runtime that is not there
    assert resolve_backend("auto", CPU) == "torch"


@needs_runtime
@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_exported_outputs_equal_torch(name, backend):
    reference = _runner(name, "torch")
    runner = _runner(name, backend)
    x = _batch(runner, 3)
    expected = reference(x)
    out = runner(x)
    assert runner.backend == backend
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-4)
    # the batch axis stays dynamic: another batch size reuses the same export
    np.testing.assert_allclose(runner(x[:1]), expected[:1], atol=1e-4)
    assert len(runner.network._sessions) == 1


@needs_runtime
def test_exports_are_cached_by_weights(_cache, monkeypatch):
    backend = EXPORTED[0]
    first = _runner("mri-flair-unet", backend, seed=0)
    x = _batch(first, 2)
    expected = first(x)
    files = sorted(_cache.glob("*.onnx"))
    assert len(files) == 1

    def no_export(*args):
        raise AssertionError("the cached export should have been used")

    monkeypatch.setattr(bk, "_write_onnx", no_export)
    again = _runner("mri-flair-unet", backend, seed=0)
    np.testing.assert_allclose(again(x), expected, atol=1e-5)
    monkeypatch.undo()
    monkeypatch.setenv("NAPARI_NEUROSEG_CACHE", str(_cache.parent))
    other = _runner("mri-flair-unet", backend, seed=1)  # other weights: another export
    assert weights_digest(other.model) != weights_digest(first.model)
    assert not np.allclose(other(x), expected)
    assert len(sorted(_cache.glob("*.onnx"))) == 2


def test_prune_cache_keeps_recent_files(tmp_path):
    for i, name in enumerate(["old", "mid", "new"]):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    prune_cache(tmp_path, max_bytes=250)
    assert sorted(p.stem for p in tmp_path.glob("*.onnx")) == ["mid", "new"]
    prune_cache(tmp_path, keep=tmp_path / "mid.onnx", max_bytes=50)
    assert sorted(p.stem for p in tmp_path.glob("*.onnx")) == ["mid"]


class NumpyInside(nn.Module):
    """A network ONNX cannot trace (it leaves torch for NumPy)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.from_numpy(y.detach().numpy().copy())


@needs_runtime
def test_auto_falls_back_to_torch_when_export_fails(monkeypatch):
    monkeypatch.setattr(bk, "CPU_DEFAULT", EXPORTED[0])
    spec = ModelRegistry().get("mri-flair-unet")
    spec = replace(spec, arch_kwargs={})
    monkeypatch.setattr(bk, "_write_onnx", _failing_export)
    runner = ModelRunner(NumpyInside(), replace(spec, classes=("a", "b")), device="cpu")
    x = _batch(runner, 2)
    out = runner(x)
    assert runner.backend == "torch"
    assert "fell back to torch" in runner.network.note
    assert out.shape == (2, 2, *x.shape[2:])
    explicit = ModelRunner(NumpyInside(), replace(spec, classes=("a", "b")), device="cpu",
                           backend=EXPORTED[0])
    with pytest.raises(BackendError, match="could not run NumpyInside"):
        explicit(x)


def _failing_export(*args):
    raise RuntimeError("cannot trace this network")


@needs_runtime
def test_first_calls_from_two_threads_export_once(monkeypatch):
    runner = _runner("mri-flair-unet", EXPORTED[0])
    calls = []
    real = bk._write_onnx
    monkeypatch.setattr(bk, "_write_onnx", lambda *a: (calls.append(1), real(*a)))
    x = _batch(runner, 2)
    results = [None, None]

    def work(i):
        results[i] = runner(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


@needs_runtime
def test_predict_region_with_an_exported_backend_equals_torch():
    image = np.random.default_rng(2).integers(0, 256, (300, 280, 3), dtype=np.uint8)
    results = {}
    for backend in ("torch", EXPORTED[0]):
        runner = _runner("mri-flair-unet", backend)
        options = EngineOptions(patch_size=256, halo=16, overlap=32, batch_size=4)
        results[backend] = predict_region(image, runner, options)
    ref, got = results["torch"], results[EXPORTED[0]]
    np.testing.assert_allclose(got.probabilities, ref.probabilities, atol=1e-4)
    assert (got.labels == ref.labels).mean() > 0.999


def test_runner_reports_its_backend():
    runner = _runner("nuclei-lenet", "channels-last")
    assert runner.backend == "channels-last"
    assert "backend='channels-last'" in repr(runner)
    reference = _runner("nuclei-lenet", "torch")
    x = _batch(runner, 4)
    np.testing.assert_allclose(runner(x), reference(x), atol=1e-5)
