"""Write files and folders atomically: a temporary name in the same folder, then a rename.

A writer that fails halfway (a full disk, a dask block that raises, an interrupted process)
must never leave a half-written file at the path the user asked for. Both context managers
here hand out a temporary path next to the target (same folder, hence same file system, so
the final :func:`os.replace` is atomic) and only move it into place when the ``with`` block
finishes without an exception; otherwise the temporary is deleted.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A fresh hidden name next to ``path``: ``<folder>/.<name>.<random><suffix>``.

    Parameters
    ----------
    path : str or os.PathLike
        The final path.
    suffix : str
        Ending of the temporary name.

    Returns
    -------
    pathlib.Path
        A path in the same folder as ``path`` that does not exist yet.
    """
    target = Path(path)
    while True:
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        if not candidate.exists():
            return candidate


def _remove(path: Path) -> None:
    """Delete a file or folder if it exists (best effort, never raises)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``path`` when the block succeeds.

    The temporary path is ``.<name>.<random>.tmp`` in the folder of ``path``. On success it
    is moved onto ``path`` with :func:`os.replace` (atomic, replaces an existing file); on
    any exception it is deleted and the exception propagates, so ``path`` is either the
    complete new file or whatever was there before.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. Its folder must exist.

    Yields
    ------
    pathlib.Path
        Where to write. Nothing has to exist there when the block ends with an exception.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.

    Examples
    --------
    >>> with atomic_path("mask.tif") as tmp:  # doctest: +SKIP
    ...     tifffile.imwrite(tmp, mask)
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: folder {target.parent} does not exist")
    tmp = temporary_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block succeeds.

    Like :func:`atomic_path` for folders (a zarr store, a folder of slices). The temporary
    folder is created before it is yielded. A folder already at ``path`` is replaced: it is
    first renamed aside, the new folder is renamed in, then the old one is deleted; if the
    swap fails the old folder is put back.

    Parameters
    ----------
    path : str or os.PathLike
        The folder to write. Its parent must exist.

    Yields
    ------
    pathlib.Path
        An empty folder to fill.

    Raises
    ------
    FileNotFoundError
        If the parent of ``path`` does not exist.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: folder {target.parent} does not exist")
    tmp = temporary_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def _swap_in(new: Path, target: Path) -> None:
    """Move folder ``new`` to ``target``, replacing (and deleting) what was there."""
    if not target.exists():
        os.replace(new, target)
        return
    old = temporary_sibling(target, suffix=".old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    _remove(old)
