"""Machine-readable training progress: one JSON object per line on stdout.

``python -m training <task> --progress jsonl`` writes every :class:`training.loop.Trainer`
progress event (``step``, ``epoch_end``, ``resume``) as one JSON line, flushed, then a last
line that says how the run ended::

    {"event": "epoch_end", "epoch": 0, "epochs": 3, "train_loss": 0.61, ...}
    {"event": "finished", "best": "RUN/checkpoints/best.safetensors",
     "last": "RUN/checkpoints/last.safetensors", "metrics": {...}}
    {"event": "failed", "error": "DataError: ..."}

Other output (the effective configuration, warnings) may be interleaved as plain text lines;
readers keep the lines that parse as a JSON object with an ``"event"`` key and log the rest
(:class:`napari_neuroseg.annotate.trainjob.TrainJob` does).

The task recipes build their Trainer through ``training.tasks._common.trainer_options``, which
passes ``on_progress=current()``: None (the Trainer's text bar) unless :func:`reporting` has
installed the JSON-lines writer for the duration of the run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "PROGRESS_CHOICES",
    "JsonlProgress",
    "RunReport",
    "current",
    "encode_event",
    "installed",
    "reporting",
    "warn",
]

PROGRESS_CHOICES = ("bar", "jsonl")

ProgressCallback = Callable[[dict[str, Any]], None]

_current: list[ProgressCallback] = []  # the innermost `installed` callback, for this process


def current() -> ProgressCallback | None:
    """The progress callback a Trainer built now should use (None: its default text bar)."""
    return _current[-1] if _current else None


@contextmanager
def installed(callback: ProgressCallback | None) -> Iterator[None]:
    """Make ``callback`` what :func:`current` returns inside the ``with`` block.

    ``None`` leaves the current choice as it is (the text bar by default).
    """
    if callback is None:
        yield
        return
    _current.append(callback)
    try:
        yield
    finally:
        _current.remove(callback)


def _plain(value: Any) -> Any:
    """``value`` with numpy/torch scalars and arrays, paths and non-finite floats made JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return _plain(value.tolist())
    return str(value)


def encode_event(event: dict[str, Any]) -> str:
    """One event as a single line of strict JSON (NaN and infinities become null)."""
    return json.dumps(_plain(event), separators=(",", ":"), allow_nan=False)


def warn(message: str) -> None:
    """Tell the user something about the run that does not stop it (e.g. a weaker split).

    The message goes to stderr (the log) and, when a progress callback is installed (under
    ``--progress jsonl``), as ``{"event": "warning", "message": ...}`` (the Train widget shows
    it). Only rank 0 speaks.
    """
    if not _is_main_rank():
        return
    print(f"warning: {message}", file=sys.stderr, flush=True)
    callback = current()
    if callback is not None:
        callback({"event": "warning", "message": message})


class JsonlProgress:
    """``on_progress`` callback that writes each event as a JSON line, flushed.

    Parameters
    ----------
    stream : file, optional
        Default ``sys.stdout`` (looked up at each call, so captured output works).
    interval : float
        Minimum seconds between two ``step`` events; the last step of an epoch and every
        other event are always written.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.2) -> None:
        self.stream, self.interval = stream, interval
        self._last_step = -math.inf

    def __call__(self, event: dict[str, Any]) -> None:
        """Write one event."""
        if event.get("event") == "step":
            now = time.monotonic()
            steps = event.get("steps")
            last = steps is not None and event.get("step", 0) + 1 == steps
            if now - self._last_step < self.interval and not last:
                return
            self._last_step = now
        out = self.stream or sys.stdout
        out.write(encode_event(event) + "\n")
        out.flush()


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


class RunReport:
    """What :func:`reporting` yields: records the outcome and writes the closing event.

    Attributes
    ----------
    callback : callable or None
        The installed ``on_progress`` callback (None for the text bar).
    """

    def __init__(self, progress: str, stream: TextIO | None = None) -> None:
        if progress not in PROGRESS_CHOICES:
            raise ValueError(f"--progress must be one of {', '.join(PROGRESS_CHOICES)}, "
                             f"not {progress!r}")
        self.progress, self.stream = progress, stream
        self.callback: ProgressCallback | None = (
            JsonlProgress(stream) if progress == "jsonl" else None)

    def _write(self, event: dict[str, Any]) -> None:
        if self.progress == "jsonl" and _is_main_rank():
            out = self.stream or sys.stdout
            out.write(encode_event(event) + "\n")
            out.flush()

    def finished(self, metrics: dict[str, Any], out: str | os.PathLike[str] | None) -> None:
        """Write the ``finished`` event: best and last checkpoints (None if absent), metrics."""
        paths: dict[str, str | None] = {"best": None, "last": None}
        if out:
            for name in paths:
                path = Path(out) / "checkpoints" / f"{name}.safetensors"
                paths[name] = str(path.resolve()) if path.is_file() else None
        self._write({"event": "finished", **paths, "metrics": metrics})

    def failed(self, error: BaseException) -> None:
        """Write the ``failed`` event with the error's type and message."""
        message = str(error) or type(error).__name__
        if not isinstance(error, ValueError):
            message = f"{type(error).__name__}: {message}"
        self._write({"event": "failed", "error": message, "type": type(error).__name__})


@contextmanager
def reporting(progress: str = "bar", stream: TextIO | None = None) -> Iterator[RunReport]:
    """Install the ``progress`` choice for the Trainers built inside; report failures.

    Parameters
    ----------
    progress : {"bar", "jsonl"}
        ``bar`` changes nothing; ``jsonl`` installs :class:`JsonlProgress` as :func:`current`
        and, when the block raises, writes ``{"event": "failed", "error": ...}`` before the
        exception propagates. Call :meth:`RunReport.finished` once the run succeeded.
    stream : file, optional
        Default ``sys.stdout``.
    """
    report = RunReport(progress, stream)
    with installed(report.callback):
        try:
            yield report
        except BaseException as err:
            if not isinstance(err, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                report.failed(err)
            raise
