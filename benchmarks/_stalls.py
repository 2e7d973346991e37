"""Where the Qt main thread is when the event loop stalls: a sampling watchdog for benchmarks.

A QTimer heartbeat says *how long* the event loop was blocked; this says *where*. A daemon
thread wakes every ``period`` seconds and, when the last heartbeat is older than
``threshold`` seconds, records the main thread's innermost frames (``sys._current_frames``).
The samples are grouped by the first frame inside a chosen package, so the report names the
code that held the GUI thread (a napari layer refresh, our widget code, the garbage collector).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback


class StallSampler:
    """Sample the main thread's stack whenever the heartbeat is late.

    Parameters
    ----------
    threshold : float
        Seconds since the last heartbeat after which the main thread counts as stalled.
    period : float
        Seconds between samples.
    """

    def __init__(self, threshold: float = 0.05, period: float = 0.01) -> None:
        self.threshold, self.period = threshold, period
        self.main_id = threading.main_thread().ident
        self.last_beat = time.perf_counter()
        self.samples: collections.Counter[str] = collections.Counter()
        self.others: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        """Record a heartbeat (connect to the QTimer)."""
        self.last_beat = time.perf_counter()

    def start(self) -> StallSampler:
        self.last_beat = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if time.perf_counter() - self.last_beat < self.threshold:
                continue
            frames = sys._current_frames()
            frame = frames.get(self.main_id)
            if frame is not None:
                self.samples[where(traceback.extract_stack(frame))] += 1
            for ident, other in frames.items():  # where the other threads are meanwhile
                if ident not in (self.main_id, threading.get_ident()):
                    stack = traceback.extract_stack(other)
                    if any("/napari_neuroseg/" in f.filename for f in stack):
                        self.others[where(stack)] += 1

    def report(self, top: int = 5) -> list[tuple[str, float]]:
        """The ``top`` places the main thread was stalled in, with the seconds sampled there."""
        return [(key, n * self.period) for key, n in self.samples.most_common(top)]

    def report_others(self, top: int = 5) -> list[tuple[str, float]]:
        """Where our other threads (the workers) were while the main thread was late."""
        return [(key, n * self.period) for key, n in self.others.most_common(top)]


def where(stack: traceback.StackSummary) -> str:
    """A short name for a stalled stack: the innermost frame of each of napari_neuroseg,
    napari, vispy, zarr and dask that it passes through (outermost first), then the innermost
    frame overall."""
    chain: list[str] = []
    seen: set[str] = set()
    for frame in reversed(stack):
        for package in ("napari_neuroseg", "napari", "vispy", "zarr", "dask", "benchmarks"):
            if f"/{package}/" in frame.filename and package not in seen:
                seen.add(package)
                chain.append(f"{_short(frame.filename)}:{frame.name}")
    inner = stack[-1]
    return " > ".join([*reversed(chain), f"{_short(inner.filename)}:{inner.name}"])


def _short(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:])
