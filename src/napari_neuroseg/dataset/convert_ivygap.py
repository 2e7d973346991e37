"""Convert IvyGAP glioblastoma region maps (colour-coded PNGs) to a ``tissue`` dataset.

The layout is ``images/<stem>.jpg`` (whole H&E sections), ``labels/<stem>_L.png`` (RGB region
maps with exact colours, no anti-aliasing) and ``Mask_Labels.txt``, one line per colour:
``R G B<TAB>Name`` (``33 143 166\tLeading_Edge_LE_(Teal_or_Blue_Areas)``). The names are
matched to :data:`GBM_REGION_CLASSES` by the IvyGAP abbreviation they contain (``LE``, ``IT``,
``CT``, ``CTpnz``, ``CTpan``, ``CTmvp``, ``CTne``, ``BC``), so the table's order and colours
may change without changing the class ids.

Stems name the tumour, the tissue block and the section: ``W3-1-1-A.2.01`` is patient ``W3``,
block ``A``, section ``2.01``. Sections of one block are neighbours in the tissue, so every
item's ``slide_id`` is ``<patient>-<block>`` (``W3-A``) and a split that keeps slides together
keeps a block together.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .convert_nuclei import image_tiles, read_image_file, read_rgb
from .layout import Dataset
from .manifest import DatasetError, safe_id
from .writer import DatasetWriter

__all__ = [
    "GBM_REGION_CLASSES",
    "IVYGAP_ABBREVIATIONS",
    "IVYGAP_MPP",
    "convert_ivygap",
    "ivygap_block",
    "read_mask_labels",
    "region_colours",
    "region_mask",
]

#: Estimated µm per pixel of the IvyGAP whole sections resized to 1024x1024 (the files do not
#: record it; estimated, see docs/models.md).
IVYGAP_MPP = 5.0
#: The GBM anatomic region classes; the position is the class id (the model registry uses
#: these names).
GBM_REGION_CLASSES = (
    "background",
    "leading edge",
    "infiltrating tumour",
    "cellular tumour",
    "perinecrotic zone",
    "pseudopalisading cells around necrosis",
    "microvascular proliferation",
    "necrosis",
)
#: IvyGAP abbreviation (as in ``Mask_Labels.txt``) -> class id in :data:`GBM_REGION_CLASSES`.
IVYGAP_ABBREVIATIONS = {
    "BC": 0, "Background": 0, "LE": 1, "IT": 2, "CT": 3, "CTpnz": 4, "CTpan": 5,
    "CTmvp": 6, "CTne": 7,
}

Colour = tuple[int, int, int]
_STEM = re.compile(r"^(W\d+)-\d+-\d+-([A-Za-z]+)\.(\d+(?:\.\d+)*)$")
_LABEL_SUFFIX = "_L.png"


def read_mask_labels(path: str | os.PathLike[str]) -> dict[Colour, str]:
    """The colour table of an IvyGAP ``Mask_Labels.txt``: ``{(r, g, b): name}``.

    Parameters
    ----------
    path : str or os.PathLike
        Lines ``R G B<TAB>Name``; blank lines are ignored.

    Returns
    -------
    dict of (int, int, int) to str
        In the order of the file.

    Raises
    ------
    DatasetError
        If the file is unreadable or empty, a line is malformed (not three integers 0-255, a
        tab and a name) or a colour is listed twice; the message names the file and the line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable colour table ({exc})") from exc
    table: dict[Colour, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        colour, _, name = line.partition("\t")
        values = colour.split()
        if (not name.strip() or len(values) != 3 or not all(v.isdigit() for v in values)
                or not all(0 <= int(v) <= 255 for v in values)):
            raise DatasetError(f"{path}, line {number}: expected 'R G B<TAB>Name' with R, G, B "
                               f"in 0-255, found {line!r}")
        rgb = (int(values[0]), int(values[1]), int(values[2]))
        if rgb in table:
            raise DatasetError(f"{path}, line {number}: colour {rgb} is listed twice "
                               f"({table[rgb]!r} and {name.strip()!r})")
        table[rgb] = name.strip()
    if not table:
        raise DatasetError(f"{path}: no colours in this colour table")
    return table


def region_colours(table: dict[Colour, str], path: str | os.PathLike[str] = "colour table"
                   ) -> dict[Colour, int]:
    """``{(r, g, b): class id}`` from a :func:`read_mask_labels` table, by abbreviation.

    A name's abbreviation is the word (split on ``_`` and spaces, parenthesised notes
    ignored) found in :data:`IVYGAP_ABBREVIATIONS`: ``Perinecrotic_Zone_CTpnz_(...)`` is 4.

    Raises
    ------
    DatasetError
        If a name holds no known abbreviation, or abbreviations of different classes; the
        message names ``path`` and the name.
    """
    out = {}
    for rgb, name in table.items():
        words = re.split(r"[_\s]+", re.sub(r"\([^)]*\)", " ", name))
        ids = {IVYGAP_ABBREVIATIONS[w] for w in words if w in IVYGAP_ABBREVIATIONS}
        if len(ids) != 1:
            raise DatasetError(f"{path}: region {name!r} {rgb} names "
                               f"{'no' if not ids else 'more than one'} known IvyGAP class; "
                               f"known abbreviations: {', '.join(IVYGAP_ABBREVIATIONS)}")
        out[rgb] = ids.pop()
    return out


def _stem_parts(stem: str) -> tuple[str, str, str]:
    match = _STEM.match(stem)
    if match is None:
        raise DatasetError(f"{stem!r} is not an IvyGAP section name like 'W3-1-1-A.2.01' "
                           "(patient-x-x-block.section)")
    patient, block, section = match.groups()
    return patient, block, section


def ivygap_block(stem: str) -> tuple[str, str]:
    """The patient and tissue block of an IvyGAP section name.

    ``"W3-1-1-A.2.01"`` -> ``("W3", "A")``; ``"W30-1-1-B.01"`` -> ``("W30", "B")``.

    Raises
    ------
    DatasetError
        If ``stem`` does not have that form; the message names it.
    """
    patient, block, _ = _stem_parts(stem)
    return patient, block


def region_mask(rgb: np.ndarray, colours: dict[Colour, int],
                path: str | os.PathLike[str] = "region map") -> np.ndarray:
    """Class ids (uint8) of a colour-coded region map.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8 (an alpha channel is ignored).
    colours : dict of (int, int, int) to int
        Colour -> class id (:func:`region_colours`).
    path : str or os.PathLike
        Named in error messages.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` uint8 class ids.

    Raises
    ------
    DatasetError
        If the map is not RGB(A) or holds a colour not in ``colours``; the message names the
        file, the colour, how many pixels have it and the first such (row, col).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise DatasetError(f"{path}: a region map must be RGB uint8, found {rgb.dtype} "
                           f"{rgb.shape}")
    channels = rgb[..., :3].astype(np.uint32)
    packed = ((channels[..., 0] << 16) | (channels[..., 1] << 8) | channels[..., 2]).ravel()
    values, first, inverse, counts = np.unique(packed, return_index=True, return_inverse=True,
                                               return_counts=True)
    known = {(r << 16) | (g << 8) | b: cls for (r, g, b), cls in colours.items()}
    for value, start, count in zip(values.tolist(), first.tolist(), counts.tolist(),
                                   strict=True):
        if value not in known:
            colour = (value >> 16, (value >> 8) & 255, value & 255)
            row, col = divmod(start, rgb.shape[1])
            raise DatasetError(f"{path}: colour {colour} is not in the colour table "
                               f"({count} pixels, first at (row, col) ({row}, {col}))")
    lookup = np.array([known[v] for v in values.tolist()], np.uint8)
    return lookup[inverse.reshape(-1)].reshape(rgb.shape[:2])


def convert_ivygap(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                   mpp: float = IVYGAP_MPP) -> Dataset:
    """Convert an IvyGAP folder (images, region maps, colour table) to a ``tissue`` dataset.

    Parameters
    ----------
    src : str or os.PathLike
        Holds ``images/<stem>.jpg``, ``labels/<stem>_L.png`` and ``Mask_Labels.txt``.
    dst : str or os.PathLike
        The dataset folder to create or extend.
    mpp : float
        µm per pixel of the images (:data:`IVYGAP_MPP`, an estimate).

    Returns
    -------
    Dataset
        Classes :data:`GBM_REGION_CLASSES`; one item per image, id the stem, ``patient_id``
        the patient (``W3``), ``slide_id`` patient and block (``W3-A``), ``extra`` holding
        ``source`` ("ivygap"), ``block``, ``section`` (``2.01``) and ``class_pixels``
        (pixels per class name).

    Raises
    ------
    DatasetError
        If the colour table is missing or malformed, an image has no region map or a
        differently sized one, a name is not an IvyGAP section name, or a map holds a colour
        not in the table; the message names the file.
    """
    root = Path(src)
    colours = region_colours(read_mask_labels(root / "Mask_Labels.txt"),
                             root / "Mask_Labels.txt")
    class_map = dict(enumerate(GBM_REGION_CLASSES))
    tiles = image_tiles(root / "images")
    with DatasetWriter(dst, "tissue", "HE", class_map, flush_every=16) as writer:
        for path in tiles:
            patient, block, section = _stem_parts(path.stem)
            label_path = root / "labels" / f"{path.stem}{_LABEL_SUFFIX}"
            if not label_path.is_file():
                raise DatasetError(f"{path}: no region map {label_path}")
            image = read_rgb(path)
            mask = region_mask(read_image_file(label_path), colours, label_path)
            if mask.shape != image.shape[:2]:
                raise DatasetError(f"{label_path}: region map {mask.shape} differs from its "
                                   f"image {image.shape[:2]} ({path.name})")
            pixels = np.bincount(mask.ravel(), minlength=len(GBM_REGION_CLASSES))
            extra = {"source": "ivygap", "block": block, "section": section,
                     "class_pixels": {name: int(n) for name, n
                                      in zip(GBM_REGION_CLASSES, pixels, strict=True)}}
            try:
                writer.add(image, mask, item_id=safe_id(path.stem), patient_id=patient,
                           slide_id=f"{patient}-{block}", source_path=path, mpp=mpp,
                           extra=extra)
            except DatasetError as exc:
                raise DatasetError(f"{path}: {exc}") from exc
    return Dataset.open(dst)
