"""Device choice, mixed precision and model preparation (GPU parts skip without CUDA)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_neuroseg.models import device as dev
from napari_neuroseg.models.device import (
    DeviceError,
    amp_dtype,
    autocast,
    prepare_for_inference,
    resolve_device,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def _no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


def test_cpu_and_auto_without_accelerators(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    _no_accelerators(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")


def test_auto_prefers_mps_over_cpu_when_there_is_no_cuda(monkeypatch):
    _no_accelerators(monkeypatch)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize("request_", ["cuda", "cuda:0", "cuda:1"])
def test_unavailable_cuda_is_a_clear_error(monkeypatch, request_):
    _no_accelerators(monkeypatch)
    with pytest.raises(DeviceError, match=rf"device '{request_}' requested but torch .*use 'cpu'"):
        resolve_device(request_)


def test_unavailable_mps_and_unknown_requests(monkeypatch):
    _no_accelerators(monkeypatch)
    with pytest.raises(DeviceError, match=r"'mps' requested but Apple MPS is not available"):
        resolve_device("mps")
    for bad in ("gpu", "cuda:x", "tpu:0", ""):
        with pytest.raises(ValueError, match=r"unknown device.*'auto', 'cpu', 'cuda', 'cuda:N'"):
            resolve_device(bad)


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"'cuda:2' requested but .* 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_amp_dtype(monkeypatch):
    assert amp_dtype("cpu") is None
    assert amp_dtype(torch.device("mps")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype("cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(torch.device("cuda", 0)) == torch.float16


def test_autocast_is_plain_float32_on_cpu():
    a = torch.ones(4, 4)
    with autocast("cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", enabled=False):
        assert (a @ a).dtype == torch.float32


def test_prepare_for_inference_on_cpu():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5))
    model.train()
    same = prepare_for_inference(model, torch.device("cpu"))
    assert same is model and not model.training and not model[1].training
    weight = model[0].weight
    assert weight.device.type == "cpu" and weight.is_contiguous()


@pytest.mark.gpu
@needs_cuda
def test_cuda_device_amp_and_channels_last():
    device = resolve_device("cuda")
    assert device.type == "cuda" and device.index is not None
    assert resolve_device("auto") == device
    model = prepare_for_inference(nn.Conv2d(3, 8, 3), device)
    assert model.weight.device == device
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.ones(1, 3, 16, 16, device=device)
    with torch.inference_mode(), autocast(device):
        y = model(x)
    assert y.dtype == amp_dtype(device) and y.dtype in (torch.bfloat16, torch.float16)
    with pytest.raises(DeviceError, match=r"CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@no_cuda
def test_this_machine_without_cuda_says_so():
    with pytest.raises(DeviceError, match=r"'cuda' requested"):
        resolve_device("cuda")
