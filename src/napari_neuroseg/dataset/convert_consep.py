"""Convert CoNSeP patches (instance maps plus a nucleus-type map) to a ``nuclei`` dataset.

The layout is ``images/<name>.{png,jpg,tif}``, ``inst/<name>.tif`` (integer instance ids, 0
background) and, optionally, ``type/<name>.png`` (nucleus type per pixel, CoNSeP's merged
classes :data:`NUCLEUS_TYPES`). Each instance gets the type most of its pixels carry (type 0
only if none of them has a type), stored per item as ``extra["types"]`` (``{"<id>": type}``);
the type names go in ``extra["type_names"]``.

CoNSeP is scanned at 40x, about 0.25 µm/px. Its 41 images come from 16 patients, but which
image belongs to whom is not published, so the image (``train_10`` for ``train_10_003``) is
the patient id used for splits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .convert_nuclei import image_tiles, read_image_file, read_rgb
from .layout import Dataset
from .manifest import DatasetError
from .tasks import NUCLEI_CLASSES
from .writer import DatasetWriter

__all__ = ["CONSEP_MPP", "NUCLEUS_TYPES", "convert_consep", "instance_types_of"]

#: µm per pixel of the CoNSeP 40x scans.
CONSEP_MPP = 0.25
#: CoNSeP's merged nucleus types (the HoVer-Net paper's four classes), 0 is background.
NUCLEUS_TYPES = {0: "background", 1: "other", 2: "inflammatory", 3: "epithelial",
                 4: "spindle-shaped"}


def instance_types_of(instances: np.ndarray, types: np.ndarray, where: str = "type map"
                      ) -> dict[int, int]:
    """``{instance id: type}`` by majority of the instance's non-zero type pixels.

    Raises
    ------
    DatasetError
        If the maps differ in shape or the type map holds an id not in :data:`NUCLEUS_TYPES`.
    """
    if instances.shape != types.shape:
        raise DatasetError(f"{where}: type map {types.shape} differs from the instance map "
                           f"{instances.shape}")
    unknown = sorted(set(np.unique(types).tolist()) - set(NUCLEUS_TYPES))
    if unknown:
        raise DatasetError(f"{where}: unknown nucleus type id(s) {unknown}; known: "
                           f"{NUCLEUS_TYPES}")
    inside = instances > 0
    ids, inverse = np.unique(instances[inside], return_inverse=True)
    n = len(NUCLEUS_TYPES)
    votes = np.bincount(inverse * n + types[inside].astype(np.int64),
                        minlength=ids.size * n).reshape(ids.size, n)
    typed = votes[:, 1:]
    best = np.where(typed.max(axis=1) > 0, typed.argmax(axis=1) + 1, 0)
    return {int(i): int(t) for i, t in zip(ids, best, strict=True)}


def convert_consep(folder: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                   mpp: float = CONSEP_MPP) -> Dataset:
    """Convert a CoNSeP-layout folder to a ``nuclei`` dataset with nucleus types.

    Parameters
    ----------
    folder : str or os.PathLike
        Holds ``images/``, ``inst/`` and optionally ``type/`` (see the module docstring).
    dst : str or os.PathLike
        The dataset folder to create or extend.
    mpp : float
        µm per pixel (0.25, 40x).

    Returns
    -------
    Dataset
        One item per patch; ``extra`` holds ``source`` ("consep"), ``n_nuclei``, and with a
        type map ``types`` and ``type_names``.

    Raises
    ------
    DatasetError
        If a patch has no instance map, a map's size differs from its image, or a type id is
        unknown; the message names the file.
    """
    root = Path(folder)
    tiles = image_tiles(root / "images")
    with DatasetWriter(dst, "nuclei", "HE", NUCLEI_CLASSES, flush_every=128) as writer:
        for path in tiles:
            inst_path = root / "inst" / f"{path.stem}.tif"
            if not inst_path.is_file():
                raise DatasetError(f"{path}: no instance map {inst_path}")
            image = read_rgb(path)
            instances = read_image_file(inst_path)
            if instances.shape != image.shape[:2]:
                raise DatasetError(f"{inst_path}: instance map {instances.shape} differs from "
                                   f"its image {image.shape[:2]} ({path.name})")
            if instances.ndim != 2 or instances.dtype.kind not in "ui":
                raise DatasetError(f"{inst_path}: an instance map must be a 2-D integer "
                                   f"image, found {instances.dtype} {instances.shape}")
            extra = {"source": "consep", "n_nuclei": len(np.unique(instances[instances > 0]))}
            type_path = root / "type" / f"{path.stem}.png"
            if type_path.is_file():
                types = instance_types_of(instances, read_image_file(type_path), str(type_path))
                extra.update(types={str(k): v for k, v in types.items()},
                             type_names={str(k): v for k, v in NUCLEUS_TYPES.items()})
            patient = "consep-" + path.stem.rsplit("_", 1)[0]
            writer.add(image, instances, patient_id=patient, slide_id=path.stem,
                       source_path=path, mpp=mpp, extra=extra)
    return Dataset.open(dst)
