"""Which reader handles a path, and one entry point that opens any supported input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from napari_neuroseg.io._types import LazyImage, ReaderError

Format = Literal["slide", "dicom", "nifti", "lgg", "tiff-stack"]
PathLike = str | Path

_TIFF_SUFFIXES = (".tif", ".tiff")
#: Patients one open may show: each is four layers, and a folder of many patients' loose
#: slices (the ``lgg_mri_slices`` sample: 21 patients, 84 layers) blocks napari for seconds.
MAX_LGG_PATIENTS = 1


def detect_format(path: PathLike | Sequence[PathLike]) -> Format | None:
    """Say which reader can open ``path``, without reading pixel data.

    Parameters
    ----------
    path : str, Path or sequence of them
        A file, a folder, or a list of DICOM files.

    Returns
    -------
    str or None
        ``"slide"`` (including PNG/JPEG and single RGB TIFF pictures), ``"dicom"``,
        ``"nifti"``, ``"lgg"`` (Kaggle LGG slices, with or without masks) or
        ``"tiff-stack"``; ``None`` when no reader handles it. Never raises.
    """
    from napari_neuroseg.io import dicom, mri, slide

    try:
        if not isinstance(path, str | Path):
            paths = [Path(p) for p in path]
            if paths and all(p.is_file() and dicom.is_dicom_file(p) for p in paths):
                return "dicom"
            return None
        p = Path(path)
        if p.is_dir():
            if mri.is_lgg_folder(p):
                return "lgg"
            if dicom.is_dicom_folder(p):
                return "dicom"
            return None
        if not p.is_file():
            return None
        if dicom.is_dicom_file(p):
            return "dicom"
        if mri.is_nifti(p):
            return "nifti"
        tiff = p.suffix.lower() in _TIFF_SUFFIXES
        if tiff and mri.is_lgg_slice(p):  # an LGG slice is an RGB picture too: check it first
            return "lgg"
        if slide.is_slide_file(p):
            return "slide"
        if tiff:
            return "tiff-stack"
    except OSError:
        return None
    return None


def open_image(
    path: PathLike | Sequence[PathLike],
    *,
    mpp: float | None = None,
    series: str | int | None = None,
    resample: bool = False,
    spacing: float | None = None,
) -> list[LazyImage]:
    """Open any supported input lazily.

    Parameters
    ----------
    path : str, Path or sequence of them
        A slide or H&E picture (PNG, JPEG, RGB TIFF), a DICOM file, folder, DICOMDIR or list
        of files, a NIfTI file, a TIFF stack, or a Kaggle LGG patient folder or slice (a
        folder with several patients' slices is refused: open one patient at a time).
    mpp : float, optional
        Slides only: microns per pixel to use instead of (or in the absence of) the file's.
    series : str or int, optional
        DICOM only: the series to open (SeriesInstanceUID, SeriesNumber or index); all by default.
    resample : bool
        DICOM only: resample to a uniform, tilt-corrected grid.
    spacing : float, optional
        DICOM only: the slice spacing in mm when resampling (default: the median spacing).

    Returns
    -------
    list of LazyImage

    Raises
    ------
    ReaderError
        When no reader handles ``path`` or the file is unreadable; the message names the file.
    """
    from napari_neuroseg.io import dicom, mri, slide

    fmt = detect_format(path)
    label = path if isinstance(path, str | Path) else ", ".join(str(p) for p in path)
    if fmt is None:
        if isinstance(path, str | Path) and not Path(path).exists():
            raise ReaderError(label, "no such file or folder")
        raise ReaderError(label, "not a slide, DICOM series, NIfTI, TIFF stack or LGG folder")
    if fmt == "slide":
        return [slide.read_slide(path, mpp=mpp)]
    if fmt == "dicom":
        return dicom.read_dicom(path, series=series, resample=resample, spacing=spacing)
    if fmt == "nifti":
        return [mri.read_nifti(path)]
    if fmt == "lgg":
        return mri.read_lgg_folder(path, max_patients=MAX_LGG_PATIENTS)
    return [mri.read_tiff_stack(path)]
