"""Is a retrained checkpoint at least as good as the model it started from, on the same split?

``python -m training <task> --init CKPT`` validates ``CKPT`` once before the first epoch and
every checkpoint's sidecar records both results (:class:`training.loop.Trainer`,
``evaluate_init``)::

    "metrics": {"epoch": 3, "pq": 0.61, "monitor": "pq", "mode": "max",
                "validation": {"val_loss": 0.4, "pq": 0.61, ...},
                "baseline": {"val_loss": 0.5, "pq": 0.58, ...}}

:func:`compare_with_start` reads that (JSON only: no torch) and says whether the new model may
replace the old one without asking. Pure: the Train widget shows :meth:`StartComparison.text`
and offers a model that is worse, or that cannot be compared, for the user to choose.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["StartComparison", "compare_with_start"]


@dataclass(frozen=True)
class StartComparison:
    """The new checkpoint's validation value against its starting model's, same split.

    Attributes
    ----------
    metric : str
        The value compared: the run's monitored value when it is a validation metric, else
        ``val_loss``.
    mode : {"max", "min"}
        Whether higher or lower is better.
    new : float or None
        The new checkpoint's value (None: not recorded or not finite).
    start : float or None
        The starting model's value on the same split (None: training started from scratch,
        or the run did not validate its start).
    """

    metric: str
    mode: str
    new: float | None
    start: float | None

    @property
    def at_least_as_good(self) -> bool:
        """True only when both values are known and the new one is not worse."""
        if self.new is None or self.start is None:
            return False
        return self.new >= self.start if self.mode == "max" else self.new <= self.start

    def text(self) -> str:
        """One line with the two numbers side by side, e.g. ``validation pq: new 0.000 vs
        start 0.612 (higher is better)``."""
        better = "higher" if self.mode == "max" else "lower"
        new = "not recorded" if self.new is None else f"{self.new:.3f}"
        if self.start is None:
            return (f"validation {self.metric}: new {new}; the starting model was not "
                    "measured (no --init checkpoint)")
        return (f"validation {self.metric}: new {new} vs start {self.start:.3f} "
                f"({better} is better)")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def compare_with_start(checkpoint: str | os.PathLike[str]) -> StartComparison:
    """Compare ``checkpoint`` (its sidecar's metrics) with the weights its run started from.

    Parameters
    ----------
    checkpoint : path
        ``best.safetensors`` (or its ``.json`` sidecar) of a training run.

    Returns
    -------
    StartComparison
        ``start`` is None when the sidecar records no baseline (no ``--init``, an older run,
        or a sidecar that cannot be read).
    """
    sidecar = Path(checkpoint).with_suffix(".json")
    try:
        metrics = json.loads(sidecar.read_text(encoding="utf-8")).get("metrics") or {}
    except (OSError, ValueError, AttributeError):
        metrics = {}
    monitor = str(metrics.get("monitor") or "val_loss")
    mode = "max" if metrics.get("mode") == "max" else "min"
    validation = metrics.get("validation") or {}
    baseline = metrics.get("baseline") or {}
    if monitor not in validation and "val_loss" in validation:
        monitor, mode = "val_loss", "min"  # e.g. monitor train_loss: compare on validation
    new = _finite(validation.get(monitor, metrics.get(monitor)))
    return StartComparison(monitor, mode, new, _finite(baseline.get(monitor)))
