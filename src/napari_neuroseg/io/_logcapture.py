"""Collect what a library logs instead of raising (tifffile, nibabel) while a file opens."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def captured_log(logger_name: str, level: int = logging.WARNING) -> Iterator[list[str]]:
    """Collect the messages ``logger_name`` logs at ``level`` or above inside the block.

    Parameters
    ----------
    logger_name : str
        The library's logger, e.g. ``"tifffile"`` or ``"nibabel"``.
    level : int
        The lowest level collected.

    Yields
    ------
    list of str
        Filled with the messages as they are logged.
    """
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=level)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
