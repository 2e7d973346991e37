"""The engine's named choices as enums: blend mode, output mode, activation.

Each member is also the string it stands for (``BlendMode.GAUSSIAN == "gaussian"``), so
either may be passed; :meth:`EngineChoice.parse` turns a string into the member and raises an
:class:`~napari_neuroseg.engine.errors.EngineError` that names the allowed values otherwise.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from napari_neuroseg.engine.errors import EngineError

_LABELS = {"BlendMode": "blend mode", "OutputMode": "mode", "Activation": "activation"}


class EngineChoice(str, Enum):
    """Base of the engine's string enums (``str`` first, so members compare equal to strings)."""

    @classmethod
    def parse(cls, value: Any) -> Any:
        """The member whose value is ``value`` (a member or its string).

        Raises
        ------
        EngineError
            ``value`` is none of the members; the message lists them.
        """
        try:
            return cls(value)
        except ValueError:
            raise EngineError(
                f"unknown {_LABELS.get(cls.__name__, cls.__name__)} {value!r}; "
                f"use one of {cls.values()}"
            ) from None

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The members' strings, in definition order."""
        return tuple(member.value for member in cls)

    def __str__(self) -> str:
        return str(self.value)


class BlendMode(EngineChoice):
    """How overlapping tile windows are weighted.

    ``GAUSSIAN`` (sigma = 1/8 of the window), ``LINEAR`` (a tent), ``CONSTANT`` (plain
    average) or ``NONE`` (only tile cores are written; nothing overlaps).
    """

    GAUSSIAN = "gaussian"
    LINEAR = "linear"
    CONSTANT = "constant"
    NONE = "none"


class OutputMode(EngineChoice):
    """What a predictor returns per tile.

    ``DENSE``: ``(N, K, H, W)``, one output per pixel; ``TILE``: ``(N, K)``, one output per
    tile, broadcast over its window (tile classifiers).
    """

    DENSE = "dense"
    TILE = "tile"


class Activation(EngineChoice):
    """Applied to each tile's outputs over the class axis before blending.

    ``NONE`` (outputs as they are), ``SOFTMAX`` or ``SIGMOID``.
    """

    NONE = "none"
    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
