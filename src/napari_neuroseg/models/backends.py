"""Inference backends: how a :class:`~napari_neuroseg.models.runner.ModelRunner` runs its network.

A backend turns the torch network into a callable with the network's own contract (a float32
NCHW tensor in, the network's raw output out: a tensor, or a dict of tensors for HoVer-Net),
so the runner's normalisation, conversion and checks stay the same whatever runs the network.

===============  ==================================================================
backend          what runs the network
===============  ==================================================================
torch            PyTorch eager, float32 (mixed precision and channels-last on CUDA)
channels-last    PyTorch eager, float32, channels-last memory format
bf16             PyTorch eager, channels-last, bfloat16 autocast (CPUs with bf16)
compile          ``torch.compile`` of the network (compiled on the first batch)
onnxruntime      ONNX Runtime on the CPU, from an ONNX export of the network
openvino         OpenVINO on the CPU, float32 precision, from the same ONNX export
===============  ==================================================================

The ONNX export is made on the first batch of each input shape and cached on disk
(:func:`backend_cache_dir`), keyed by a hash of the weights, the architecture, the input
shape and the versions of torch and the runtime, so later sessions load it in a fraction of
a second. ``"auto"`` picks :data:`CPU_DEFAULT` on the CPU when its runtime is installed
(chosen by ``benchmarks/bench_backends.py``, see ``docs/benchmarks.md``) and ``torch``
elsewhere; the environment variable ``NAPARI_NEUROSEG_BACKEND`` overrides that choice. When
an automatically chosen backend cannot export a network, the runner falls back to ``torch``
and says why in :attr:`Network.note`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_neuroseg.models.device import autocast

__all__ = [
    "BACKENDS",
    "CPU_DEFAULT",
    "CPU_TORCH_ARCHITECTURES",
    "BackendError",
    "Network",
    "backend_cache_dir",
    "make_network",
    "prune_cache",
    "resolve_backend",
    "weights_digest",
]

log = logging.getLogger(__name__)

BACKENDS = ("torch", "channels-last", "bf16", "compile", "onnxruntime", "openvino")
EXPORTED = ("onnxruntime", "openvino")
_RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
CPU_DEFAULT = "openvino"
"""The CPU default of ``"auto"``: the fastest backend of ``benchmarks/bench_backends.py``
that met the adoption rule there (>= 1.5x torch float32, outputs within 1e-3, labels equal
on >= 99.9 % of pixels) on the shipped models; see ``docs/benchmarks.md``."""
CPU_TORCH_ARCHITECTURES = ("lenet5",)
"""Architectures that ``"auto"`` keeps on torch on the CPU: networks so small (LeNet on
32 px tiles) that no backend met the rule, a runtime's cost per call outweighing the gain."""
ENV_VAR = "NAPARI_NEUROSEG_BACKEND"
ONNX_OPSET = 17
MAX_CACHE_BYTES = 1 << 30
"""The export cache keeps at most this much (least recently used exports go first)."""


class BackendError(RuntimeError):
    """A backend that is unknown, not installed, or not available on the device."""


def _installed(backend: str) -> bool:
    module = _RUNTIME_MODULES.get(backend)
    return module is None or importlib.util.find_spec(module) is not None


def resolve_backend(request: str, device: torch.device, architecture: str | None = None
                    ) -> str:
    """Turn a backend request into one of :data:`BACKENDS` for ``device``.

    Parameters
    ----------
    request : str
        ``"auto"`` or one of :data:`BACKENDS`.
    device : torch.device
        The resolved device the runner uses.
    architecture : str, optional
        The network's registry architecture (see :data:`CPU_TORCH_ARCHITECTURES`).

    Returns
    -------
    str
        ``"auto"`` becomes ``$NAPARI_NEUROSEG_BACKEND`` when set, else :data:`CPU_DEFAULT`
        on the CPU (``"torch"`` if its runtime is not installed, or for the architectures
        of :data:`CPU_TORCH_ARCHITECTURES`) and ``"torch"`` on other devices.

    Raises
    ------
    BackendError
        An unknown backend, a runtime that is not installed, or an exported or bf16
        backend asked for on a device other than the CPU.
    """
    request = str(request).strip().lower()
    if request == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            return resolve_backend(env, device)
        if device.type != "cpu" or architecture in CPU_TORCH_ARCHITECTURES:
            return "torch"
        return CPU_DEFAULT if _installed(CPU_DEFAULT) else "torch"
    if request not in BACKENDS:
        raise BackendError(f"unknown inference backend {request!r}: use 'auto' or one of "
                           f"{', '.join(BACKENDS)}")
    if request in (*EXPORTED, "bf16") and device.type != "cpu":
        raise BackendError(f"backend {request!r} runs on the CPU only, not on {device}; "
                           "use 'torch' (mixed precision) there")
    if not _installed(request):
        raise BackendError(f"backend {request!r} needs the {_RUNTIME_MODULES[request]} "
                           f"package: pip install {_RUNTIME_MODULES[request]}")
    return request


def backend_cache_dir() -> Path:
    """Where exported networks are cached.

    ``$NAPARI_NEUROSEG_CACHE/backends`` when that variable is set, else
    ``$XDG_CACHE_HOME/napari-neuroseg/backends`` (``~/.cache/...`` by default).
    """
    root = os.environ.get("NAPARI_NEUROSEG_CACHE")
    if root:
        return Path(root) / "backends"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "napari-neuroseg" / "backends"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{data.dtype};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class Network:
    """A network behind one backend: ``network(x)`` gives what ``model(x)`` gives.

    Parameters
    ----------
    model : torch.nn.Module
        The network, in eval mode on its device.
    backend : str
        One of :data:`BACKENDS`, already resolved (:func:`resolve_backend`).
    device : torch.device
    amp : bool
        Mixed precision on accelerators (the ``torch`` backend only).
    fallback : bool
        When an exported backend cannot export the network, run it with ``torch`` (and say
        why in :attr:`note`) instead of raising.
    cache_dir : Path, optional
        Where exports are cached (default :func:`backend_cache_dir`).
    """

    def __init__(
        self,
        model: nn.Module,
        backend: str,
        device: torch.device,
        *,
        amp: bool = False,
        fallback: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        self.model, self.backend, self.device, self.amp = model, backend, device, amp
        self.fallback = fallback
        self.cache_dir = cache_dir
        self.note = ""
        self._lock = threading.Lock()
        self._sessions: dict[tuple[int, ...], Callable[[np.ndarray], Any]] = {}
        self._digest: str | None = None
        self._compiled: Callable[[torch.Tensor], Any] | None = None
        channels_last = device.type == "cuda" or backend in ("channels-last", "bf16")
        self._channels_last = channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return f"Network({type(self.model).__name__}, backend={self.backend!r})"

    def __call__(self, x: torch.Tensor) -> Any:
        """The network's raw output for a float32 NCHW tensor on the runner's device."""
        if self.backend in EXPORTED:
            return self._run_exported(x)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.backend == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self.model(x)
            if self.backend == "compile":
                return self._torch_compiled()(x)
            with autocast(self.device, enabled=self.amp):
                return self.model(x)

    def _torch_compiled(self) -> Callable[[torch.Tensor], Any]:
        with self._lock:
            if self._compiled is None:
                self._compiled = torch.compile(self.model)
            return self._compiled

    # --- exported backends -----------------------------------------------------------

    def _run_exported(self, x: torch.Tensor) -> Any:
        shape = tuple(int(s) for s in x.shape[1:])
        session = self._sessions.get(shape)
        if session is None:
            with self._lock:
                session = self._sessions.get(shape) or self._open(x)
                if session is None:  # export failed and fell back to torch
                    return self(x)
                self._sessions[shape] = session
        return session(x.detach().cpu().numpy())

    def _open(self, x: torch.Tensor) -> Callable[[np.ndarray], Any] | None:
        try:
            path, names = self._export(x)
            return _session(self.backend, path, names)
        except Exception as err:  # the exporters and runtimes raise many kinds
            message = (f"{self.backend} could not run {type(self.model).__name__}: "
                       f"{type(err).__name__}: {err}")
            if not self.fallback:
                raise BackendError(message) from err
            log.warning("%s; running it with torch instead", message)
            self.note = f"{message}; fell back to torch"
            self.backend = "torch"
            return None

    def _export(self, x: torch.Tensor) -> tuple[Path, tuple[str, ...] | None]:
        """The cached ONNX file of the network for ``x``'s per-item shape, and output keys."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        example = x[:1].detach().cpu().clone()  # a normal tensor, not an inference one
        with torch.no_grad():
            out = self.model(example)
        names = tuple(k for k, v in out.items() if v is not None) if isinstance(
            out, Mapping) else None
        key = hashlib.sha256(
            "|".join((self._digest, type(self.model).__qualname__, str(tuple(example.shape[1:])),
                      str(names), torch.__version__, _onnx_version(), str(ONNX_OPSET))).encode()
        ).hexdigest()[:32]
        folder = self.cache_dir or backend_cache_dir()
        path = folder / f"{type(self.model).__name__.lower()}-{key}.onnx"
        if path.is_file():
            path.touch()  # recently used: pruned last
        else:
            _write_onnx(self.model, example, names, path)
            prune_cache(folder, keep=path)
        return path, names


def prune_cache(folder: Path, keep: Path | None = None, max_bytes: int = MAX_CACHE_BYTES) -> None:
    """Delete the least recently used exports in ``folder`` until it holds ``max_bytes``."""
    files = sorted(folder.glob("*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
    total = 0
    for file in files:
        total += file.stat().st_size
        if total > max_bytes and file != keep:
            file.unlink(missing_ok=True)


def _onnx_version() -> str:
    try:
        import onnx

        return onnx.__version__
    except ImportError:
        return "none"


class _Flat(nn.Module):
    """The network with its dict output as a tuple (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[name] for name in self.names)


_EXPORT_LOCK = threading.Lock()
"""torch's ONNX exporter keeps global state: one export at a time in a process."""


def _write_onnx(model: nn.Module, example: torch.Tensor, names: tuple[str, ...] | None,
                path: Path) -> None:
    """Export ``model`` (batch axis dynamic) to ``path`` atomically."""
    with _EXPORT_LOCK:
        _export_unlocked(model, example, names, path)


def _export_unlocked(model: nn.Module, example: torch.Tensor, names: tuple[str, ...] | None,
                     path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    module = model if names is None else _Flat(model, names)
    outputs = list(names) if names is not None else ["out"]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    os.close(fd)
    try:
        # gradients stay enabled: under no_grad, attention takes a fused fast path that
        # the ONNX exporter does not know
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), tmp, dynamo=False, opset_version=ONNX_OPSET,
                input_names=["x"], output_names=outputs,
                dynamic_axes={"x": {0: "n"}, **{o: {0: "n"} for o in outputs}},
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _session(backend: str, path: Path, names: tuple[str, ...] | None
             ) -> Callable[[np.ndarray], Any]:
    """A callable from a float32 NCHW array to the network's output (tensors)."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> Any:
            return _outputs(session.run(None, {"x": x}), names)

        return run
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": _threads(),
        "PERFORMANCE_HINT": "LATENCY",
    })

    def run_ov(x: np.ndarray) -> Any:
        result = compiled(x)
        return _outputs([result[o] for o in compiled.outputs], names)

    return run_ov


def _outputs(arrays: list[Any], names: tuple[str, ...] | None) -> Any:
    tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]
    return tensors[0] if names is None else dict(zip(names, tensors, strict=True))


def make_network(model: nn.Module, request: str, device: torch.device, *, amp: bool = False,
                 architecture: str | None = None, cache_dir: Path | None = None) -> Network:
    """The network behind the backend ``request`` resolves to (see :func:`resolve_backend`).

    An ``"auto"`` request falls back to ``torch`` when the export fails; an explicit one
    raises :class:`BackendError` then.
    """
    backend = resolve_backend(request, device, architecture)
    automatic = str(request).strip().lower() == "auto"
    return Network(model, backend, device, amp=amp and backend == "torch", fallback=automatic,
                   cache_dir=cache_dir)
