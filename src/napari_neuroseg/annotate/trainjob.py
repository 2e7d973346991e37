"""One ``python -m training`` run as a separate process: its command, launch, events, cancel.

Pure (no napari, Qt or torch): :class:`TrainJob` builds the exact command line, starts it in
its own process group with ``--progress jsonl``, parses the JSON events it prints on stdout
(:mod:`training.events`) and can cancel it. The Train widget drives it from a worker thread;
the same object serves scripts and tests.

Every stream ends with exactly one terminal event: the run's own ``finished`` or ``failed``,
or one made up here when the process died without saying (``failed`` with the last lines of
the log) or was cancelled (``cancelled``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import yaml

from napari_neuroseg.dataset.tasks import TASK_NAMES
from napari_neuroseg.io._atomic import atomic_path

__all__ = [
    "LOG_NAME",
    "OPTIONS_NAME",
    "TASKS",
    "TERMINAL_EVENTS",
    "TrainJob",
    "dataset_task",
    "default_run_folder",
    "parse_event",
    "parse_options",
    "training_launcher",
]

#: The ``python -m training`` task sub-commands: the dataset tasks, in their order.
TASKS = TASK_NAMES
TERMINAL_EVENTS = ("finished", "failed", "cancelled")
LOG_NAME = "train.log"
OPTIONS_NAME = "train-options.yaml"
_POSIX = os.name == "posix"


def parse_event(line: str) -> dict[str, Any] | None:
    """The event on one stdout line, or None when the line is not a JSON event object."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("event"), str) else None


def parse_options(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Task options from YAML text (or a mapping); ``{}`` for nothing.

    Raises
    ------
    ValueError
        The text is not YAML, or not a mapping of option names to values.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    if not text.strip():
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"extra options are not valid YAML: {err}") from err
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError("extra options must be 'name: value' lines (a YAML mapping), e.g. "
                         "'base_features: 16'")
    return value


def dataset_task(path: str | os.PathLike[str]) -> str | None:
    """The ``task`` in the manifest of the dataset at ``path`` (None if there is none)."""
    manifest = Path(path) / "manifest.json"
    try:
        task = json.loads(manifest.read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError):
        return None
    return task if isinstance(task, str) else None


def training_launcher() -> tuple[str, ...]:
    """The argv prefix that runs this environment's ``training`` package.

    ``python -P -m training`` on Python 3.11+: ``-P`` keeps the working directory off
    ``sys.path``, so a ``training`` folder there cannot shadow the installed package (the
    child also runs in the run folder, which covers Python 3.10).
    """
    safe_path = ("-P",) if sys.version_info >= (3, 11) else ()
    return (sys.executable, *safe_path, "-m", "training")


def default_run_folder(data: str | os.PathLike[str], task: str,
                       now: datetime | None = None) -> Path:
    """``<dataset's parent>/runs/<task>-<YYYYmmdd-HHMMSS>``: a fresh folder per run."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(data).absolute().parent / "runs" / f"{task}-{stamp}"


@dataclass
class TrainJob:
    """A ``python -m training`` run launched as a child process and watched.

    Parameters
    ----------
    task : str
        Sub-command (one of :data:`TASKS`).
    data : path
        Dataset folder in the export layout.
    init : path, optional
        Checkpoint to start from (``--init``).
    out : path
        Run folder (checkpoints, report; the log and the options file go there too).
    epochs : int, optional
    device : str, optional
        ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
    extra_config : str or mapping, optional
        Task options as YAML text (or a mapping), written to ``out/train-options.yaml`` and
        passed as ``--config``.
    launcher : sequence of str
        The argv prefix that runs the training command line (default
        :func:`training_launcher`; tests swap in a wrapper script). The child runs in ``out``
        (every path it gets is absolute), never in the caller's working directory.
    """

    task: str
    data: str | os.PathLike[str]
    init: str | os.PathLike[str] | None = None
    out: str | os.PathLike[str] | None = None
    epochs: int | None = None
    device: str | None = None
    extra_config: str | Mapping[str, Any] | None = None
    launcher: Sequence[str] = field(default_factory=training_launcher)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown training task {self.task!r}; choose one of "
                             f"{', '.join(TASKS)}")
        if not self.data or not str(self.data).strip():
            raise ValueError("choose the dataset folder (an export) to train on")
        if self.out is None or not str(self.out).strip():
            self.out = default_run_folder(self.data, self.task)
        self.data = Path(self.data).absolute()
        self.out = Path(self.out).absolute()
        self.init = Path(self.init).absolute() if self.init else None
        self.options = parse_options(self.extra_config)
        self.process: subprocess.Popen[str] | None = None
        self.last_event: dict[str, Any] | None = None
        self.cancelled = False
        self._lock = threading.Lock()  # start() and cancel() may run on different threads
        self._finished: dict[str, Any] | None = None
        self._log: IO[str] | None = None

    # -- the command ---------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """``out/train.log``: the child's stderr and its stdout lines that are not events."""
        return Path(self.out) / LOG_NAME

    @property
    def options_path(self) -> Path | None:
        """``out/train-options.yaml`` when there are extra options, else None."""
        return Path(self.out) / OPTIONS_NAME if self.options else None

    def arguments(self) -> list[str]:
        """The task sub-command and its options (without launcher and ``--progress``)."""
        args = [self.task, "--data", str(self.data)]
        if self.init:
            args += ["--init", str(self.init)]
        args += ["--out", str(self.out)]
        if self.epochs is not None:
            args += ["--epochs", str(int(self.epochs))]
        if self.device:
            args += ["--device", str(self.device)]
        if self.options_path is not None:
            args += ["--config", str(self.options_path)]
        return args

    def command(self) -> list[str]:
        """The exact argv :meth:`start` runs (with ``--progress jsonl``)."""
        return [*self.launcher, *self.arguments(), "--progress", "jsonl"]

    def shell_command(self) -> str:
        """A shell-quoted ``python -m training ...`` line to run elsewhere (e.g. a GPU machine).

        Its ``--config`` file, when there is one, is written by :meth:`start` or
        :meth:`write_options` (copy it along).
        """
        return shlex.join(["python", "-m", "training", *self.arguments()])

    def write_options(self) -> Path | None:
        """Write the extra options file (atomically); returns its path (None without options)."""
        path = self.options_path
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(yaml.safe_dump(self.options, sort_keys=False),
                                 encoding="utf-8")
        return path

    # -- running -------------------------------------------------------------------------
    def start(self) -> subprocess.Popen[str]:
        """Launch the run: own process group, stdout piped, stderr to :attr:`log_path`.

        Raises
        ------
        RuntimeError
            The job was started already, or cancelled before it started.
        """
        with self._lock:
            if self.process is not None:
                raise RuntimeError("this training job was started already")
            if self.cancelled:
                raise RuntimeError("this training job was cancelled before it started")
            return self._launch()

    def _launch(self) -> subprocess.Popen[str]:
        Path(self.out).mkdir(parents=True, exist_ok=True)
        self.write_options()
        self.log_path.write_text(f"$ {shlex.join(self.command())}\n", encoding="utf-8")
        # both the child (stderr) and events() (stray stdout) append: O_APPEND keeps them apart
        self._log = open(self.log_path, "a", encoding="utf-8", buffering=1)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        group = ({"start_new_session": True} if _POSIX
                 else {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)})
        try:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=self._log, text=True, encoding="utf-8", errors="replace", bufsize=1,
                env=env, cwd=self.out, **group)
        except OSError:
            self._close_log()
            raise
        return self.process

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status (None while running or before :meth:`start`)."""
        return None if self.process is None else self.process.poll()

    @property
    def best_checkpoint(self) -> Path | None:
        """The best checkpoint of a finished run (from its ``finished`` event, else on disk)."""
        if self._finished and self._finished.get("best"):
            return Path(self._finished["best"])
        path = Path(self.out) / "checkpoints" / "best.safetensors"
        return path if self._finished is not None and path.is_file() else None

    def events(self) -> Iterator[dict[str, Any]]:
        """Parsed events, in order, until the process ends; the last one is terminal.

        Starts the job if needed. Lines that are not events go to the log. Blocks while the
        run is silent; :meth:`cancel` (from another thread) ends the stream.
        """
        if self.process is None:
            if self.cancelled:
                self.last_event = {"event": "cancelled", "returncode": None}
                yield self.last_event
                return
            self.start()
        assert self.process is not None and self.process.stdout is not None
        terminal: dict[str, Any] | None = None
        try:
            for line in self.process.stdout:
                event = parse_event(line)
                if event is None:
                    if self._log is not None and line.strip():
                        self._log.write(line if line.endswith("\n") else line + "\n")
                    continue
                if event["event"] == "finished":
                    self._finished = event
                if event["event"] in TERMINAL_EVENTS:
                    terminal = event
                self.last_event = event
                yield event
            code = self.process.wait()
        finally:
            self._close_log()
        if terminal is None:
            event = self._closing_event(code)
            self.last_event = event
            yield event

    def _closing_event(self, code: int) -> dict[str, Any]:
        """The terminal event for a process that ended without writing one."""
        if self.cancelled:
            return {"event": "cancelled", "returncode": code}
        if code == 0:  # a run without --progress events (or an old training package)
            self._finished = {"event": "finished", "best": None, "last": None, "metrics": {}}
            best = self.best_checkpoint
            self._finished["best"] = str(best) if best else None
            return {**self._finished, "returncode": code}
        return {"event": "failed", "returncode": code,
                "error": f"training exited with status {code}: {self.log_tail()}"}

    def log_tail(self, lines: int = 5) -> str:
        """The last non-empty lines of the log, joined (the error, usually)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept) or "(empty log)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cancel(self, grace: float = 5.0, *, block: bool = True) -> None:
        """Stop the run: SIGTERM to its process group, SIGKILL after ``grace`` seconds.

        Parameters
        ----------
        grace : float
            Seconds the processes get to exit after SIGTERM.
        block : bool
            Wait (up to ``grace``, then for the kill) here; False does that in a daemon thread
            and returns at once (for a GUI thread).
        """
        with self._lock:
            if self.process is None:  # not launched yet: it never will be
                self.cancelled = True
                return
            if self.process.poll() is not None:
                return
            self.cancelled = True
            self._signal(signal.SIGTERM)
        if block:
            self._escalate(grace)
        else:
            threading.Thread(target=self._escalate, args=(grace,), daemon=True).start()

    def _escalate(self, grace: float) -> None:
        assert self.process is not None
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # the group may hold data-loader workers even when the leader is gone
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
        self.process.wait()

    def _signal(self, sig: int) -> None:
        assert self.process is not None
        try:
            if _POSIX:
                os.killpg(self.process.pid, sig)
            elif sig == signal.SIGTERM:
                self.process.terminate()
            else:
                self.process.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end (None on timeout)."""
        if self.process is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self.process.wait(None if deadline is None else
                                     max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
