"""The bridge between the tile engine and a torch model: NumPy batches in, NumPy outputs out.

A :class:`ModelRunner` is a callable ``runner(batch) -> np.ndarray`` (the engine's predictor
contract). ``batch`` is float32 NCHW, already preprocessed by the engine but **not
normalised**: the runner applies the spec's normalisation on the device, runs the network
in chunks of ``batch_size`` through its inference backend (:mod:`.backends`: ONNX Runtime,
OpenVINO or torch; autocast and channels-last on CUDA) and returns float32 outputs in one
convention per task:

==========================  ==========================================================
task                        output
==========================  ==========================================================
semantic_segmentation       (N, K, H, W) softmax probabilities; a 1-channel (sigmoid)
                            network gives K = 2: ``[1 - p, p]``
instance_segmentation       (N, 4 [+ T], H, W): nuclear-pixel background and foreground
                            probabilities, h and v maps, then T type probabilities
tile_classification         (N, K) softmax probabilities
slice_classification        (N, 1) sigmoid probability
image_translation           (N, 3, H, W) in [0, 1] (the network's [-1, 1] rescaled)
==========================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from napari_neuroseg.models.backends import Network, make_network
from napari_neuroseg.models.device import amp_dtype, prepare_for_inference, resolve_device
from napari_neuroseg.models.spec import ModelSpec

if TYPE_CHECKING:
    from napari_neuroseg.models.registry import ModelRegistry

__all__ = ["NORMALIZATION_KINDS", "ModelRunner", "RunnerError", "normalize"]

NORMALIZATION_KINDS = ("range", "zscore", "mean_std", "ct_window")
_DENSE_TASKS = ("semantic_segmentation", "instance_segmentation", "image_translation")


class RunnerError(ValueError):
    """A batch or a network output that does not fit the model's spec."""


def _rescale(x: torch.Tensor, norm: Mapping[str, Any]) -> torch.Tensor:
    """Map [0, 1] to ``norm["out_range"]`` (default [0, 1])."""
    lo, hi = norm.get("out_range", (0.0, 1.0))
    return x if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * x


def _per_channel(values: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)


def normalize(x: torch.Tensor, normalization: Mapping[str, Any]) -> torch.Tensor:
    """Apply a spec's normalisation to an NCHW float tensor (a new tensor; ``x`` unchanged).

    Parameters
    ----------
    x : torch.Tensor
        (N, C, H, W) float32.
    normalization : mapping
        ``{"kind": "range", "scale": s, "out_range": [lo, hi]}``: ``x / s`` mapped to
        [lo, hi] (default [0, 1]).
        ``{"kind": "zscore", "per_channel": True, "eps": 1e-6}``: per network input (one
        image of the batch), per channel unless ``per_channel`` is False.
        ``{"kind": "mean_std", "mean": [...], "std": [...], "scale": 1.0}``:
        ``(x / scale - mean[c]) / std[c]``.
        ``{"kind": "ct_window", "center": c, "width": w, "out_range": [lo, hi]}``: clip to
        ``c ± w/2`` and map to [lo, hi] (default [0, 1]).

    Returns
    -------
    torch.Tensor
        Same shape and dtype.
    """
    kind = normalization["kind"]
    if kind == "range":
        return _rescale(x / float(normalization.get("scale", 1.0)), normalization)
    if kind == "zscore":
        dims = (2, 3) if normalization.get("per_channel", True) else (1, 2, 3)
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
        return (x - mean) / std.clamp_min(float(normalization.get("eps", 1e-6)))
    if kind == "mean_std":
        scaled = x / float(normalization.get("scale", 1.0))
        mean = _per_channel(normalization["mean"], x)
        return (scaled - mean) / _per_channel(normalization["std"], x)
    if kind == "ct_window":
        width = float(normalization["width"])
        low = float(normalization["center"]) - width / 2
        return _rescale((x.clamp(low, low + width) - low) / width, normalization)
    raise ValueError(f"unknown normalization kind {kind!r} (one of {NORMALIZATION_KINDS})")


def _check_normalization(spec: ModelSpec) -> None:
    norm, n = spec.input.normalization, len(spec.input.channels)
    where = f"model {spec.name!r}: normalization {dict(norm)}"
    kind = norm.get("kind")
    if kind not in NORMALIZATION_KINDS:
        raise RunnerError(f"{where}: unknown kind (one of {NORMALIZATION_KINDS})")
    required = {"mean_std": ("mean", "std"), "ct_window": ("center", "width")}.get(kind, ())
    missing = [key for key in required if key not in norm]
    if missing:
        raise RunnerError(f"{where}: needs {', '.join(missing)}")
    if kind == "mean_std" and not (len(norm["mean"]) == len(norm["std"]) == n):
        raise RunnerError(f"{where}: mean and std need one value per channel ({n})")
    bad_mean_std = kind == "mean_std" and min(norm["std"]) <= 0
    if bad_mean_std or (kind == "ct_window" and norm["width"] <= 0):
        raise RunnerError(f"{where}: std / width must be positive")


def _two_class(p: torch.Tensor) -> torch.Tensor:
    return torch.cat([1.0 - p, p], dim=1)


class ModelRunner:
    """Run a network on NumPy batches the way its spec says (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The network; moved to ``device`` and put in eval mode (in place).
    spec : ModelSpec
        Its description: task, input channels, normalisation, classes.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    amp : bool
        Use mixed precision where the device supports it (never on the CPU).
    batch_size : int
        Largest chunk sent to the network at once.
    backend : str
        ``"auto"`` (the measured CPU default, or torch with mixed precision on GPUs) or one of
        :data:`~napari_neuroseg.models.backends.BACKENDS`; see :mod:`.backends`.

    Examples
    --------
    >>> runner = ModelRunner.from_spec("nuclei-lenet", device="cpu")  # doctest: +SKIP
    >>> runner(np.zeros((2, 3, 256, 256), np.float32)).shape  # doctest: +SKIP
    (2, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        device: str | torch.device = "auto",
        amp: bool = True,
        batch_size: int = 8,
        backend: str = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        _check_normalization(spec)
        self.spec = spec
        self.device = resolve_device(device)
        self.amp = bool(amp) and amp_dtype(self.device) is not None
        self.batch_size = int(batch_size)
        self.model = prepare_for_inference(model, self.device)
        self.network: Network = make_network(self.model, backend, self.device, amp=self.amp,
                                              architecture=spec.architecture)

    def __repr__(self) -> str:
        return (
            f"ModelRunner({self.spec.name!r}, device={self.device}, amp={self.amp}, "
            f"batch_size={self.batch_size}, backend={self.backend!r})"
        )

    @property
    def backend(self) -> str:
        """The backend that runs the network (``"torch"`` after a fallback)."""
        return self.network.backend

    @property
    def output_channels(self) -> int:
        """K, the size of axis 1 of the output (see the module docstring)."""
        task = self.spec.task
        if task == "instance_segmentation":
            return 4 + len(self.spec.extra.get("type_classes", ()))
        if task == "slice_classification":
            return 1
        return self.spec.n_classes

    @property
    def dense(self) -> bool:
        """True when the output is per pixel (N, K, H, W), False for per-tile (N, K)."""
        return self.spec.task in _DENSE_TASKS

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        amp: bool = True,
        batch_size: int = 8,
        registry: ModelRegistry | None = None,
        backend: str = "auto",
    ) -> ModelRunner:
        """A runner for a checkpoint (see :func:`~.checkpoint.load_checkpoint`)."""
        from napari_neuroseg.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(path, device="cpu", registry=registry)
        return cls(loaded.model, loaded.spec, device=device, amp=amp, batch_size=batch_size,
                   backend=backend)

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec | str,
        registry: ModelRegistry | None = None,
        *,
        device: str | torch.device = "auto",
        amp: bool = True,
        batch_size: int = 8,
        seed: int = 0,
        backend: str = "auto",
    ) -> ModelRunner:
        """A runner with random weights (seeded; the global RNG is left as it was).

        For tests and benchmarks: the outputs mean nothing.
        """
        from napari_neuroseg.models.registry import ModelRegistry

        registry = registry or ModelRegistry()
        spec = registry.get(spec) if isinstance(spec, str) else spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = registry.build(spec)
        return cls(model, spec, device=device, amp=amp, batch_size=batch_size, backend=backend)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Predict a batch.

        Parameters
        ----------
        batch : numpy.ndarray
            (N, C, H, W) float32 (other real dtypes are converted), not normalised. Not
            modified.

        Returns
        -------
        numpy.ndarray
            float32, (N, K, H, W) for dense tasks or (N, K) per tile; K =
            :attr:`output_channels`.

        Raises
        ------
        RunnerError
            Wrong number of dimensions or channels, NaN or infinite values, or a network
            output that does not fit the spec.
        """
        data = self._checked_input(batch)
        if data.shape[0] == 0:
            tail = data.shape[2:] if self.dense else ()
            return np.zeros((0, self.output_channels, *tail), np.float32)
        chunks = [
            self._run_chunk(data[start : start + self.batch_size])
            for start in range(0, data.shape[0], self.batch_size)
        ]
        return np.concatenate(chunks, axis=0)

    def _checked_input(self, batch: np.ndarray) -> np.ndarray:
        data = np.asarray(batch)
        name, channels = self.spec.name, self.spec.input.channels
        if data.ndim != 4:
            raise RunnerError(f"model {name!r} needs NCHW batches, got shape {data.shape}")
        if data.shape[1] != len(channels):
            raise RunnerError(
                f"model {name!r} expects {len(channels)} input channel(s) "
                f"({', '.join(channels)}), got {data.shape[1]} (batch shape {data.shape})"
            )
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            raise RunnerError(f"model {name!r}: batch dtype {data.dtype} is not real numbers")
        data = data.astype(np.float32, copy=False)
        finite = np.isfinite(data)
        if not finite.all():
            bad = np.flatnonzero(~finite.reshape(data.shape[0], -1).all(axis=1))
            raise RunnerError(
                f"model {name!r}: batch contains {int((~finite).sum())} NaN/infinite value(s) "
                f"(in item(s) {bad[:8].tolist()}); fix the input or its preprocessing"
            )
        return data

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        # no copy when the batch is already C-ordered float32; normalize makes a new tensor
        data = np.ascontiguousarray(chunk, dtype=np.float32)
        x = torch.from_numpy(data if data.flags.writeable else data.copy())
        x = x.to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = normalize(x, self.spec.input.normalization)
        raw = self.network(x)
        out = self._convert(raw)
        self._check_output(out, chunk.shape)
        return out.float().cpu().numpy()

    def _convert(self, raw: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        converters: dict[str, Callable[[Any], torch.Tensor]] = {
            "semantic_segmentation": self._segmentation,
            "instance_segmentation": self._instances,
            "tile_classification": lambda r: torch.softmax(self._tensor(r, 2).float(), dim=1),
            "slice_classification": lambda r: torch.sigmoid(self._tensor(r, 2).float()),
            "image_translation": lambda r: ((self._tensor(r, 4).float() + 1) / 2).clamp(0, 1),
        }
        return converters[self.spec.task](raw)

    def _tensor(self, raw: Any, ndim: int) -> torch.Tensor:
        if not isinstance(raw, torch.Tensor) or raw.ndim != ndim:
            got = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise RunnerError(
                f"model {self.spec.name!r} ({self.spec.task}) should output a {ndim}-D "
                f"tensor, got {got}"
            )
        return raw

    def _segmentation(self, raw: Any) -> torch.Tensor:
        logits = self._tensor(raw, 4).float()
        if logits.shape[1] == 1:
            return _two_class(torch.sigmoid(logits))
        return torch.softmax(logits, dim=1)

    def _instances(self, raw: Any) -> torch.Tensor:
        if not isinstance(raw, Mapping) or not {"np", "hv"} <= set(raw):
            raise RunnerError(
                f"model {self.spec.name!r} (instance_segmentation) should output a dict with "
                f"'np' and 'hv' (and optionally 'tp'), got {type(raw).__name__}"
            )
        parts = [torch.softmax(raw["np"].float(), dim=1), raw["hv"].float()]
        if raw.get("tp") is not None:
            parts.append(torch.softmax(raw["tp"].float(), dim=1))
        return torch.cat(parts, dim=1)

    def _check_output(self, out: torch.Tensor, in_shape: tuple[int, ...]) -> None:
        k = self.output_channels
        expected = (in_shape[0], k, *in_shape[2:]) if self.dense else (in_shape[0], k)
        if tuple(out.shape) != expected:
            raise RunnerError(
                f"model {self.spec.name!r} ({self.spec.task}, {self.spec.n_classes} classes) "
                f"gave output {tuple(out.shape)} after conversion, expected {expected}: the "
                "network does not match its spec (classes, type_classes or output size)"
            )
