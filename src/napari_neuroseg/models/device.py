"""Choosing the compute device and mixed precision, always at call time (never on import).

``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU. Mixed precision
(autocast) is used on accelerators only: bfloat16 on CUDA GPUs that support it, float16
otherwise; on the CPU inference stays in float32.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["DeviceError", "amp_dtype", "autocast", "prepare_for_inference", "resolve_device"]

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(RuntimeError):
    """A requested device that does not exist or is not available on this machine."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _resolve_cuda(request: str, index: str | None) -> torch.device:
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}"
        reason = "has no CUDA support" if torch.version.cuda is None else "finds no CUDA GPU"
        raise DeviceError(f"device {request!r} requested but {build} {reason}; use 'cpu'")
    count = torch.cuda.device_count()
    number = torch.cuda.current_device() if index is None else int(index)
    if number >= count:
        raise DeviceError(
            f"device {request!r} requested but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return torch.device("cuda", number)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into an available :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA if available, then MPS, then CPU), ``"cpu"``, ``"cuda"`` (the
        current CUDA device), ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    torch.device
        With an explicit index for CUDA.

    Raises
    ------
    DeviceError
        The requested device is not available (no CUDA build or GPU, index out of range,
        no MPS).
    ValueError
        The request is not one of the forms above.
    """
    request = str(device).strip().lower()
    if request == "auto":
        if torch.cuda.is_available():
            return _resolve_cuda("cuda", None)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if request == "cpu":
        return torch.device("cpu")
    if request == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available; use 'cpu'")
        return torch.device("mps")
    match = _CUDA_RE.match(request)
    if match:
        return _resolve_cuda(request, match.group(1))
    raise ValueError(
        f"unknown device {str(device)!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    )


def amp_dtype(device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for inference on ``device``.

    Parameters
    ----------
    device : str or torch.device
        An already resolved device (see :func:`resolve_device`).

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16`` on CUDA GPUs that support it, ``torch.float16`` on other CUDA GPUs
        and on MPS, ``None`` on the CPU (no mixed precision there).
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return None


@contextlib.contextmanager
def autocast(device: str | torch.device, enabled: bool = True) -> Iterator[None]:
    """Mixed-precision context for ``device`` (a no-op on the CPU or when disabled).

    Parameters
    ----------
    device : str or torch.device
        The device the computation runs on.
    enabled : bool
        False gives plain float32.

    Examples
    --------
    >>> with torch.inference_mode(), autocast("cpu"):
    ...     y = torch.ones(2, 2) @ torch.ones(2, 2)
    >>> y.dtype
    torch.float32
    """
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def prepare_for_inference(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Put ``model`` in eval mode on ``device`` (channels-last memory format on CUDA).

    The model is changed in place (as :meth:`torch.nn.Module.to` does) and returned.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    device : str or torch.device
        An already resolved device.

    Returns
    -------
    torch.nn.Module
        The same model object.
    """
    target = torch.device(device)
    model.eval()
    model.to(target)
    if target.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model
