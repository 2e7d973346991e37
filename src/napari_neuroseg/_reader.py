"""npe2 reader contribution: hands napari lazy layer data, or ``None``.

The hook never raises into napari: anything it cannot read gives ``None`` and a warning that
napari shows as a notification, naming the file and the problem.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_neuroseg.io import ReaderError, detect_format, open_image, to_layer_data

logger = logging.getLogger(__name__)

LayerData = list[tuple]
PathOrPaths = str | Sequence[str]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], LayerData | None] | None:
    """Return a reader function for ``path``, or ``None`` when this plugin does not handle it.

    Parameters
    ----------
    path : str or list of str
        What the user opened: a file, a folder, or several files (a DICOM series).

    Returns
    -------
    callable or None
    """
    target = path if isinstance(path, str) else [str(p) for p in path]
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    if detect_format(target) is None:
        return None
    return read_layers


def read_layers(path: PathOrPaths) -> LayerData | None:
    """Read ``path`` into napari layer data; ``None`` (with a warning) when it cannot be read."""
    target = path if isinstance(path, str | Path) else [str(p) for p in path]
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    try:
        return to_layer_data(open_image(target))
    except ReaderError as err:
        warnings.warn(f"napari-neuroseg could not read {err}", stacklevel=2)
    except Exception as err:  # a hook must not raise into napari
        logger.exception("unexpected error reading %s", target)
        warnings.warn(
            f"napari-neuroseg could not read {target}: {type(err).__name__}: {err}", stacklevel=2
        )
    return None
