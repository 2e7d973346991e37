"""Keep Python's full garbage collections short while a live analysis runs.

A napari session holds about 450,000 objects tracked by the cyclic garbage collector. Every
full (generation 2) collection walks all of them with the GIL held, wherever it is
triggered: measured at 230-245 ms each, about every two seconds while tiles are computed,
and they were the event-loop stalls of ``benchmarks/bench_viewer.py``. ``gc.freeze()`` moves
everything alive now to a permanent generation that collections skip; objects created later
(tiles, results) are collected as usual. It is process-wide, so it is counted: the last
holder to release it calls ``gc.unfreeze()`` and the frozen objects become collectable again
(cycles left by layers removed meanwhile are freed then, not leaked).
"""

from __future__ import annotations

import gc
import threading

__all__ = ["GcFreeze"]

_lock = threading.Lock()
_holders = 0


class GcFreeze:
    """One hold on the process-wide GC freeze; :meth:`release` is idempotent."""

    def __init__(self) -> None:
        global _holders
        with _lock:
            if _holders == 0:
                gc.freeze()
            _holders += 1
        self._held = True

    def release(self) -> None:
        """Give the hold back (the last one unfreezes)."""
        global _holders
        with _lock:
            if not self._held:
                return
            self._held = False
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()

    @staticmethod
    def holders() -> int:
        """How many holds are active."""
        return _holders
