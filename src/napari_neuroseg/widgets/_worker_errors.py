"""Let a generator worker's ``RuntimeError`` reach the widget as an error.

superqt's ``GeneratorWorker`` takes any ``RuntimeError`` that escapes the generator for a
deleted Qt object: it only warns ("RuntimeError in aborted thread"), and emits neither
``errored`` nor ``finished``. PyTorch raises ``RuntimeError`` for a CUDA out-of-memory, a
checkpoint that does not fit the network and most other failures, so a widget would wait
for that run forever, its Run button disabled. :func:`reporting_runtime_errors` wraps the
worker's function so such an error arrives as :class:`WorkerRuntimeError` instead.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerRuntimeError", "reporting_runtime_errors"]


class WorkerRuntimeError(Exception):
    """A ``RuntimeError`` raised in a worker (its message is the original type and text)."""


def _wrapped(err: RuntimeError) -> WorkerRuntimeError:
    return WorkerRuntimeError(f"{type(err).__name__}: {err}")


def reporting_runtime_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a function or a generator function), raising ``RuntimeError`` as
    :class:`WorkerRuntimeError` (the original as its ``__cause__``)."""
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from func(*args, **kwargs))
            except RuntimeError as err:
                raise _wrapped(err) from err

        return generator

    @functools.wraps(func)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RuntimeError as err:
            raise _wrapped(err) from err

    return function
