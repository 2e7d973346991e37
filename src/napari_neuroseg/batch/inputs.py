"""What a batch run's inputs are: folders of H&E tiles expanded, slides given their µm/px.

A folder that no reader takes as one image (not a DICOM series, not an LGG patient) and whose
files are all H&E pictures (PNG, JPEG, RGB TIFF) is a folder of tiles: each tile is an input
of its own, so it gets its own output folder and summary row.

A tile rarely records its pixel size. :func:`open_input` fills in the ``--mpp`` value where the
file states none, keeps the file's value where it states one (a different ``--mpp`` is logged
and ignored unless ``force_mpp``), and otherwise assumes what the reader assumes for any slide
without a pixel size (:data:`napari_neuroseg.io.slide.DEFAULT_MPP`), saying so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_neuroseg.io import LazyImage, ReaderError, detect_format, open_image
from napari_neuroseg.io.slide import DEFAULT_MPP, MPP_HINT, is_slide_file

__all__ = ["expand_inputs", "open_input", "tile_folder_files"]

#: Suffixes of the pictures a folder of tiles may hold.
TILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Relative difference between ``--mpp`` and a file's µm/px that is worth a warning.
MPP_TOLERANCE = 0.01

Log = Callable[[str], None]


def tile_folder_files(folder: str | Path) -> list[Path] | None:
    """The tiles of a folder of H&E tiles, sorted by name; None when it is not one.

    A folder of tiles is one no reader opens as a whole (DICOM series and LGG patient folders
    keep their meaning) whose visible files are all RGB PNG, JPEG or TIFF pictures.
    Sub-folders and hidden files are ignored.

    Raises
    ------
    ReaderError
        The folder holds H&E pictures mixed with other files (the message names some).
    """
    if not isinstance(folder, str | Path):
        return None
    folder = Path(folder)
    if not folder.is_dir() or detect_format(folder) is not None:
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    tiles = [p for p in files if p.suffix.lower() in TILE_SUFFIXES and is_slide_file(p)]
    if not tiles:
        return None
    others = [p.name for p in files if p not in tiles]
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ReaderError(folder, f"holds {len(tiles)} H&E pictures and {len(others)} other "
                          f"files ({shown}); a folder of tiles holds only PNG, JPEG or RGB "
                          "TIFF pictures: move the others out or name the tiles one by one")
    return tiles


def expand_inputs(inputs: Sequence[str | Path], log: Log = print) -> list[str | Path]:
    """The inputs with every folder of tiles replaced by its tiles (other inputs unchanged).

    A folder that holds pictures mixed with other files stays as it is: :func:`open_input`
    fails on it with the reason, which its summary row gives.
    """
    out: list[str | Path] = []
    for path in inputs:
        try:
            tiles = tile_folder_files(path)
        except ReaderError:
            tiles = None
        if tiles is None:
            out.append(path)
        else:
            log(f"{path}: a folder of {len(tiles)} tiles, one result each")
            out.extend(tiles)
    return out


def open_input(path: str | Path, mpp: float | None = None, *, force_mpp: bool = False,
               log: Log = print) -> list[tuple[LazyImage, dict[str, Any]]]:
    """Open one input; slides get their µm/px from the file, else ``mpp``, else the default.

    Parameters
    ----------
    path : str or pathlib.Path
        Anything :func:`napari_neuroseg.io.open_image` opens.
    mpp : float, optional
        µm/px for slides and pictures that do not state theirs (``--mpp``).
    force_mpp : bool
        Use ``mpp`` even where the file states a different value.
    log : callable
        Receives the reader's notes and what was decided about the µm/px.

    Returns
    -------
    list of (LazyImage, dict)
        Each image with its summary columns: for slides ``mpp`` (µm/px used, along x) and
        ``mpp_source`` (``file: <where>``, with `` (--mpp <value> ignored)`` when they
        differ; ``--mpp``; ``--mpp (file: <value>)``; or ``ASSUMED ...`` when nothing
        states it).

    Raises
    ------
    ReaderError, ValueError
        The input cannot be opened; ``mpp`` is not a positive number.
    """
    if mpp is not None and not mpp > 0:
        raise ValueError(f"--mpp must be a positive number of µm per pixel, got {mpp}")
    if isinstance(path, str | Path) and Path(path).is_dir():
        tile_folder_files(path)  # a folder of pictures and other files: say what is wrong
    images = _quiet_open(path)
    if not any(image.modality == "slide" for image in images):
        return [(image, {}) for image in images]
    [image] = images  # a slide file is one image
    file_mpp = image.metadata.get("file_mpp")
    name = Path(path).name
    if file_mpp is None and mpp is not None:
        image, columns = _quiet_open(path, mpp)[0], {"mpp_source": "--mpp"}
    elif file_mpp is None:
        columns = {"mpp_source": f"ASSUMED {DEFAULT_MPP:g}: the file states none, give --mpp"}
        log(f"  {name}: the file states no µm/px and no --mpp was given: ASSUMING "
            f"{DEFAULT_MPP:g} µm/px (give --mpp UM_PER_PX for the real value)")
    else:
        stated = float(file_mpp[1])
        where = image.metadata.get("mpp_source") or "file"
        differs = mpp is not None and abs(mpp - stated) > MPP_TOLERANCE * stated
        if differs and force_mpp:
            image = _quiet_open(path, mpp)[0]
            columns = {"mpp_source": f"--mpp (file: {stated:.4g})"}
            log(f"  {name}: --force-mpp: {mpp:g} µm/px instead of the file's {stated:.4g}")
        else:
            columns = {"mpp_source": f"file: {where}"}
            if differs:
                columns["mpp_source"] += f" (--mpp {mpp:g} ignored)"
                log(f"  WARNING {name}: the file states {stated:.4g} µm/px ({where}); kept, "
                    f"--mpp {mpp:g} ignored (add --force-mpp to use it)")
    for note in image.warnings:
        if MPP_HINT not in note:  # the GUI's advice; the µm/px line above says it for here
            log(f"  {note}")
    columns = {"mpp": round(float(image.scale[1]), 6), **columns}
    return [(image, columns)]


def _quiet_open(path: str | Path, mpp: float | None = None) -> list[LazyImage]:
    """:func:`open_image` with its warnings kept in ``LazyImage.warnings`` only (logged by
    the caller, not printed by Python's warning machinery)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return open_image(path, mpp=mpp)
