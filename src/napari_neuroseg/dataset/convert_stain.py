"""Unpaired IHC and H&E tiles -> a ``stain`` dataset; IHC nuclei ground truth -> its test set.

:func:`convert_stain` writes domain A (IHC) and domain B (H&E) tiles from any number of
:class:`StainSource` sets into one ``stain`` dataset, every tile resampled to one resolution
(the ``ihc-to-he`` model's working 0.5 µm/px by default, so training crops see what the model
sees in the plugin). A source may hold strips of co-registered square panels of which only
the first is an IHC image (DeepLIIF: IHC, hematoxylin, DAPI, Lap2, Ki67, segmentation).

:func:`ihc_he_sources` names the sets of ``../shared/data`` (the scikit-image colon IHC
image and the first panels of the DeepLIIF strips against the TCGA-LGG, MoNuSeg and CoNSeP
H&E tiles). The DeepLIIF Ki67 test tiles (``test_cli``) go in as domain-A items fixed to the
validation split: the generators never train on them, and their nuclei ground truth is not
read.

:func:`convert_ihc_nuclei` writes those test tiles with their colour-coded nuclei
(:func:`decode_nuclei_colours`) as instance masks, a ``stain`` dataset of domain-A items for
``python -m training evaluate`` (nuclei found through the translation).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels
from skimage.transform import resize

from .convert_nuclei import image_tiles, read_image_file, read_rgb
from .layout import Dataset
from .manifest import DatasetError
from .writer import DatasetWriter

__all__ = ["DEEPLIIF_MPP", "IHC_SAMPLE_MPP", "StainSource", "convert_ihc_nuclei",
           "convert_stain", "decode_nuclei_colours", "ihc_he_sources"]

#: DeepLIIF tiles are cut from 40x scans (about 0.25 µm/px; nuclei ~26 px across).
DEEPLIIF_MPP = 0.25
#: scikit-image's colon IHC image records no resolution; 0.5 µm/px (20x) is an estimate from
#: its epithelial nuclei (about 10-12 px wide).
IHC_SAMPLE_MPP = 0.5
#: Class map of the ``stain`` datasets written here (masks, where any, are instance ids).
CLASS_MAP = {0: "background", 1: "nucleus"}
_TCGA = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}")


@dataclass(frozen=True)
class StainSource:
    """One set of tiles of one stain.

    Attributes
    ----------
    name : str
        Short name (item ids, ``extra["source"]`` and the fallback patient prefix).
    files : tuple of Path
        The image files (RGB or RGBA).
    mpp : float
        Their resolution in µm per pixel.
    first_panel : bool
        Each file is a strip of square panels side by side; only the first is used.
    split : {None, "train", "val", "test"}
        A fixed split for every item of the set (None: the training split decides).
    """

    name: str
    files: tuple[Path, ...]
    mpp: float
    first_panel: bool = False
    split: str | None = None


def _patient(source: StainSource, path: Path) -> str:
    """The TCGA patient in the file name, else ``<source>-<image>`` (CoNSeP: its image)."""
    found = _TCGA.search(path.name)
    if found:
        return found.group(0)
    stem = path.stem
    if source.name == "consep":
        stem = stem.rsplit("_", 1)[0]  # train_10_003 -> train_10
    return f"{source.name}-{stem}"


def _resampled(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` scaled by ``scale`` (area-smoothed when shrinking), same dtype."""
    if abs(scale - 1.0) < 1e-6:
        return image
    shape = tuple(max(1, round(s * scale)) for s in image.shape[:2])
    out = resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(image.dtype)


def _panel(image: np.ndarray, path: Path) -> np.ndarray:
    h, w = image.shape[:2]
    if w < h or w % h:
        raise DatasetError(f"{path}: a strip of square panels must be n x its height wide, "
                           f"found {h}x{w}")
    return image[:, :h]


def convert_stain(domain_a: Sequence[StainSource], domain_b: Sequence[StainSource],
                  dst: str | os.PathLike[str], *, mpp: float = 0.5) -> Dataset:
    """Write IHC (A) and H&E (B) tiles into one ``stain`` dataset at ``mpp``.

    Parameters
    ----------
    domain_a, domain_b : sequence of StainSource
        The IHC and the H&E sets; each needs at least one file.
    dst : str or os.PathLike
        The dataset folder (created; an existing ``stain`` dataset is extended, and the
        same file converted again replaces its item).
    mpp : float
        Resolution of every item, µm per pixel; tiles are resampled to it.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        A domain without files, an unreadable or non-RGB file, a strip that is not made of
        square panels.
    """
    for domain, sources in (("A", domain_a), ("B", domain_b)):
        if not any(source.files for source in sources):
            raise DatasetError(f"{dst}: no files for domain {domain}")
    with DatasetWriter(dst, "stain", "IHC", CLASS_MAP, flush_every=64) as writer:
        for domain, sources in (("A", domain_a), ("B", domain_b)):
            for source in sources:
                for path in source.files:
                    image = read_rgb(Path(path))
                    if source.first_panel:
                        image = _panel(image, Path(path))
                    writer.add(_resampled(image, source.mpp / mpp),
                               item_id=f"{source.name}-{Path(path).stem}".replace(" ", "_"),
                               patient_id=_patient(source, Path(path)),
                               slide_id=f"{source.name}-{Path(path).stem}",
                               source_path=path, mpp=mpp, split=source.split, domain=domain,
                               extra={"source": source.name, "source_mpp": source.mpp})
    return Dataset.open(dst)


def _files(folder: Path, pattern: str = "*") -> tuple[Path, ...]:
    return tuple(p for p in image_tiles(folder) if p.match(pattern))


def ihc_he_sources(root: str | os.PathLike[str]) -> tuple[list[StainSource], list[StainSource]]:
    """The IHC (A) and H&E (B) sets of the shared sample data folder ``root``.

    A: ``ihc/ihc.png`` (:data:`IHC_SAMPLE_MPP`) and the first panel of ``ihc/train/*.png``
    (DeepLIIF strips, :data:`DEEPLIIF_MPP`), both fixed to the training split (so all three
    IHC images train), and ``ihc/test_cli/*.png`` fixed to the
    validation split (never trained on; ``test_groundtruth`` is not read). B: the TCGA-LGG
    tiles (``nuclei_lgg_tiles/raw_image``), MoNuSeg (``nuclei_monuseg/images``) and CoNSeP
    (``nuclei_consep/images``), all 40x (0.25 µm/px).
    """
    root = Path(root)
    ihc = root / "ihc"
    domain_a = [StainSource("skimage-ihc", (ihc / "ihc.png",), IHC_SAMPLE_MPP, split="train"),
                StainSource("deepliif", _files(ihc / "train"), DEEPLIIF_MPP, first_panel=True,
                            split="train"),
                StainSource("deepliif-test", _files(ihc / "test_cli"), DEEPLIIF_MPP,
                            split="val")]
    domain_b = [StainSource("lgg", _files(root / "nuclei_lgg_tiles" / "raw_image"), 0.25),
                StainSource("monuseg", _files(root / "nuclei_monuseg" / "images"), 0.25),
                StainSource("consep", _files(root / "nuclei_consep" / "images"), 0.25)]
    return domain_a, domain_b


def decode_nuclei_colours(code: np.ndarray, boundary_px: int = 3) -> tuple[np.ndarray, dict]:
    """Instance labels from a DeepLIIF colour-coded nuclei image.

    Blue (0, 0, 255) is a Ki67-negative nucleus, red (255, 0, 0) a positive one, green
    (0, 255, 0) the nuclei's boundaries, black the background. Each 4-connected blue or red
    region is one nucleus; the green boundary pixels within ``boundary_px`` of it are given
    to it (a boundary is part of its nucleus).

    Returns
    -------
    labels : numpy.ndarray of uint32
        ``(h, w)``, 0 background, 1..n nuclei.
    positive : dict
        ``{nucleus id: bool}`` Ki67-positive (red).
    """
    if code.ndim != 3 or code.shape[2] < 3:
        raise DatasetError(f"a colour-coded nuclei image must be RGB, found {code.shape}")
    red, green, blue = (np.asarray(code[..., c]) > 127 for c in range(3))
    interior = (red | blue) & ~green
    inner, n = ndi.label(interior)
    ids = np.arange(1, n + 1)
    red_share = ndi.mean(red & ~blue, inner, ids) if n else np.zeros(0)
    grown = expand_labels(inner, distance=boundary_px)
    labels = np.where(green & (inner == 0), grown, inner).astype(np.uint32)
    return labels, {int(i): bool(r > 0.5) for i, r in zip(ids, red_share, strict=True)}


def convert_ihc_nuclei(images: str | os.PathLike[str], groundtruth: str | os.PathLike[str],
                       dst: str | os.PathLike[str], *, mpp: float = DEEPLIIF_MPP) -> Dataset:
    """IHC tiles and their colour-coded nuclei as a ``stain`` dataset of domain-A items.

    Each ``images/<name>.png`` needs ``groundtruth/<name>.png``; the mask is
    :func:`decode_nuclei_colours`'s instance labels, ``extra["ki67_positive"]`` lists the
    positive ids. Items keep their own resolution ``mpp`` (the models resample).

    Raises
    ------
    DatasetError
        A tile without ground truth, or ground truth of another size.
    """
    truth_dir = Path(groundtruth)
    with DatasetWriter(dst, "stain", "IHC", CLASS_MAP) as writer:
        for path in image_tiles(images):
            truth = truth_dir / path.name
            if not truth.is_file():
                raise DatasetError(f"{path}: no ground truth {truth}")
            image = read_rgb(path)
            labels, positive = decode_nuclei_colours(read_image_file(truth))
            if labels.shape != image.shape[:2]:
                raise DatasetError(f"{truth}: {labels.shape} differs from its tile "
                                   f"{image.shape[:2]}")
            writer.add(image, labels, item_id=f"ihc-{path.stem}", patient_id=f"ihc-{path.stem}",
                       source_path=path, mpp=mpp, split="test", domain="A",
                       extra={"source": "deepliif-test", "n_nuclei": int(labels.max()),
                              "ki67_positive": sorted(k for k, v in positive.items() if v)})
    return Dataset.open(dst)

