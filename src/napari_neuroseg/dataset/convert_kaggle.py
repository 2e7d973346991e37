"""Convert the Kaggle "lgg-mri-segmentation" (``kaggle_3m``) layout to a dataset (task ``mri``).

The source is either the ``kaggle_3m`` folder (one sub-folder per patient study) or a flat
folder of ``<study>_<n>.tif`` slices with ``<study>_<n>_mask.tif`` masks; the file-name
parsing is the reader's (:func:`napari_neuroseg.io._lgg.find_lgg_slices`). Masks are 0/255 and
become 0/1 (:data:`~napari_neuroseg.dataset.tasks.MRI_CLASSES`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..io._lgg import LggSlice, find_lgg_slices
from .layout import Dataset, read_tiff
from .manifest import DatasetError
from .tasks import MRI_CLASSES
from .writer import DatasetWriter

_TCGA_PATIENT = re.compile(r"^(TCGA[_-][A-Z0-9]{2}[_-][A-Z0-9]{4})", re.IGNORECASE)


def lgg_patient_id(study: str) -> str:
    """The patient of a Kaggle study name: ``TCGA_CS_4942_19970222`` -> ``TCGA_CS_4942``."""
    match = _TCGA_PATIENT.match(study)
    return match[1] if match else study


def _all_studies(src: Path) -> dict[str, list[LggSlice]]:
    """Slices per study in ``src`` itself and in its immediate sub-folders."""
    studies = dict(find_lgg_slices(src))
    for sub in sorted(p for p in src.iterdir() if p.is_dir()):
        for study, slices in find_lgg_slices(sub).items():
            if study in studies:
                raise DatasetError(f"{sub}: study {study} also appears elsewhere in {src}")
            studies[study] = slices
    return studies


def convert_kaggle_lgg(src_folder: str | os.PathLike[str],
                       dst: str | os.PathLike[str]) -> Dataset:
    """Convert a Kaggle LGG folder into a dataset of FLAIR-abnormality slices.

    Parameters
    ----------
    src_folder : str or os.PathLike
        ``kaggle_3m`` (patient-study sub-folders) or a flat folder of slices and masks.
    dst : str or os.PathLike
        The dataset folder to create or extend (re-running replaces items, never duplicates).

    Returns
    -------
    Dataset
        Task ``"mri"``, modality ``"MR"``; one item per slice (image 256x256x3 uint8:
        pre-contrast, FLAIR, post-contrast), ``patient_id`` ``TCGA_XX_XXXX``,
        ``slice_index`` the slice number, ``extra`` ``{"study": ..., "channels": [...]}``.

    Raises
    ------
    DatasetError
        If there are no slices, a slice has no mask, or a file is unreadable or mismatched.
    """
    src = Path(src_folder)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder")
    studies = _all_studies(src)
    if not studies:
        raise DatasetError(f"{src}: no Kaggle LGG slices (<id>_<n>.tif + <id>_<n>_mask.tif)")
    missing = [str(s.image) for slices in studies.values() for s in slices if s.mask is None]
    if missing:
        raise DatasetError(f"{len(missing)} slice(s) without a _mask.tif, e.g. {missing[0]}")
    with DatasetWriter(dst, "mri", "MR", MRI_CLASSES, flush_every=64) as writer:
        for study, slices in studies.items():
            for s in slices:
                _add_slice(writer, study, s)
    return Dataset.open(dst)


def _add_slice(writer: DatasetWriter, study: str, s: LggSlice) -> None:
    image = read_tiff(s.image)
    assert s.mask is not None
    mask = read_tiff(s.mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise DatasetError(f"{s.mask}: mask {mask.shape} differs from image {image.shape[:2]}")
    writer.add(
        image, (mask > 0).astype(np.uint8), item_id=f"{study}_{s.number}",
        patient_id=lgg_patient_id(study), source_path=s.image, slice_index=s.number,
        extra={"study": study, "channels": ["pre-contrast", "FLAIR", "post-contrast"],
               "mask_source": str(s.mask)},
    )
