"""Console progress: a dependency-free text bar on stderr (tqdm is not required)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressBar", "format_bar"]

_SKIP = {"event", "epoch", "epochs", "lr", "seconds"}


def format_bar(done: int, total: int | None, width: int = 24) -> str:
    """``[#####-----] 5/10``, or ``[step 5]`` when the total is unknown."""
    if not total:
        return f"[step {done}]"
    filled = int(width * min(done, total) / total)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


class ProgressBar:
    """Callable for :class:`training.loop.Trainer`'s ``on_progress``.

    Redraws one line per step (at most every ``interval`` seconds) and prints one summary
    line per epoch with the loss and every metric.

    Parameters
    ----------
    stream : file, optional
        Default ``sys.stderr``.
    enabled : bool
        False prints nothing (non-zero DDP ranks).
    interval : float
        Minimum seconds between step redraws.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True,
                 interval: float = 0.2) -> None:
        self.stream, self.enabled, self.interval = stream, enabled, interval
        self._last = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        """Draw one event."""
        if not self.enabled:
            return
        out = self.stream or sys.stderr
        kind = event.get("event")
        if kind == "step":
            now = time.monotonic()
            last_step = event.get("steps") is not None and event["step"] + 1 == event["steps"]
            if now - self._last < self.interval and not last_step:
                return
            self._last = now
            bar = format_bar(event["step"] + 1, event.get("steps"))
            out.write(f"\repoch {event['epoch'] + 1}/{event['epochs']} {bar} "
                      f"loss {event['loss']:.4f}")
        elif kind == "epoch_end":
            values = " ".join(f"{k} {v:.4g}" for k, v in event.items()
                              if k not in _SKIP and isinstance(v, (int, float)))
            out.write(f"\repoch {event['epoch'] + 1}/{event['epochs']} done: {values}"
                      f" ({event.get('seconds', 0.0):.1f} s)\n")
        elif kind == "resume":
            out.write(f"resuming at epoch {event['epoch'] + 1}\n")
        out.flush()
