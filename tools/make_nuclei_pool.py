"""Write an unlabelled pool of H&E crops for the ``nuclei-tiles`` pseudo-labelling cycles.

Random tissue crops are read from level 0 of whole-slide images, resized by ``--scale`` so
their nuclei have about the size of those in the labelled tiles, and written as PNGs to one
folder (``unlabeled: DIR`` in the task's ``--config``; the task cuts each PNG into
``input_size`` squares). Reading the slides needs the package's slide readers only.

Usage (what made ``/work/datasets/nuclei-pool``)::

    python tools/make_nuclei_pool.py /work/datasets/nuclei-pool \\
        /work/shared/data/wsi/cmu-1-small-region.svs:2 \\
        /work/shared/data/wsi/tcga-cr-7395-01a-01-ts1.svs:4 --crops 40 --size 256

``SLIDE:SCALE``: the crop read is ``size / scale`` pixels a side, then resized to ``size``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from napari_neuroseg.io import open_image
from napari_neuroseg.preprocess.tissue import tissue_mask


def _lowres(levels: list) -> tuple[np.ndarray, float]:
    """The smallest level as an array and its downsample from level 0."""
    low = np.asarray(levels[-1])
    return low, levels[0].shape[0] / low.shape[0]


def tissue_crops(path: str, n: int, size: int, scale: float, rng: np.random.Generator,
                 min_tissue: float = 0.6, max_tries: int = 5000) -> list[np.ndarray]:
    """Up to ``n`` random crops of mostly tissue, resized to ``size`` x ``size`` uint8 RGB.

    Parameters
    ----------
    path : str
        A slide the package can read.
    n, size : int
        Number of crops and their side after resizing.
    scale : float
        Resize factor (the crop read is ``round(size / scale)`` level-0 pixels a side).
    rng : numpy.random.Generator
    min_tissue : float
        Least tissue fraction (HSV mask of the smallest level) a crop must have.
    max_tries : int
        Random positions tried before giving up with fewer crops.
    """
    image = open_image(path)[0]
    levels = image.levels
    low, down = _lowres(levels)
    mask = tissue_mask(low[..., :3])
    side = round(size / scale)
    h, w = levels[0].shape[:2]
    crops: list[np.ndarray] = []
    for _ in range(max_tries):
        if len(crops) == n:
            break
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        y0, y1, x0, x1 = (int(v / down) for v in (y, y + side, x, x + side))
        box = mask[y0:y1 + 1, x0:x1 + 1]
        if box.size == 0 or box.mean() < min_tissue:
            continue
        crop = np.asarray(levels[0][y:y + side, x:x + side])[..., :3].astype(np.uint8)
        resized = Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR)
        crops.append(np.asarray(resized))
    return crops


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("slides", nargs="+", help="SLIDE:SCALE (scale defaults to 1)")
    parser.add_argument("--crops", type=int, default=40, help="crops per slide")
    parser.add_argument("--size", type=int, default=256, help="side of the written PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for item in args.slides:
        path, _, scale = item.rpartition(":") if ":" in item else (item, "", "1")
        crops = tissue_crops(path, args.crops, args.size, float(scale), rng)
        stem = Path(path).name.split(".")[0]
        for k, crop in enumerate(crops):
            Image.fromarray(crop).save(args.out / f"{stem}_{k:03d}.png")
        print(f"{path}: {len(crops)} crops of {args.size} px (scale {scale})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
