"""What ``ihc-to-he`` is for: nuclei in IHC found by an H&E nuclei model.

The CycleGAN + HoVer-Net recipe (docs/training-recipes.md).

On IHC tiles with nuclei ground truth (domain-A items of a ``stain`` dataset with instance
masks, e.g. :func:`napari_neuroseg.dataset.convert_stain.convert_ihc_nuclei`), one run scores
three ways of finding the nuclei, on the same tiles and with the same functions:

* the H&E nuclei model (the shipped ``nuclei-hovernet`` unless another is given) on the raw
  IHC tile;
* the same model on the tile translated to H&E by the checkpoint under test;
* the classical hematoxylin method
  (:func:`napari_neuroseg.analysis.nuclei_classical.classical_nuclei`) on the raw IHC tile,
  at the tile's µm/px.

Each model runs at its own working resolution (the tile resampled from its recorded µm/px,
as the plugin does with a slide) and its instances are scored on the tile's grid
(:mod:`training.tasks.nuclei.native`). Scores: Dice, AJI, PQ (DQ, SQ), mean over tiles
(:func:`training.tasks.nuclei.task.mean_instance_scores`), and detection precision, recall
and F1 pooled over tiles: a found nucleus is a true positive when its centroid is within
``radius_um`` of a true nucleus' centroid, each matched at most once (Hungarian assignment
on the centroid distances).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions, classical_nuclei
from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel, load_checkpoint
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from training.tasks._common import DataError
from training.tasks.nuclei.compare import score_table
from training.tasks.nuclei.data import rgb
from training.tasks.nuclei.native import tile_maps
from training.tasks.nuclei.sources import resize_rgb, working_shape
from training.tasks.nuclei.task import mean_instance_scores, postprocess_options

__all__ = ["DEFAULT_NUCLEI_MODEL", "RADIUS_UM", "centroids", "detection_counts",
           "detection_scores", "ihc_nuclei_comparison", "nuclei_table", "translate_tile"]

DEFAULT_NUCLEI_MODEL = "nuclei-hovernet"
#: Centroid distance (µm) within which a found nucleus matches a true one (about half a
#: nucleus diameter).
RADIUS_UM = 3.0
_COLUMNS = ("f1", "precision", "recall", "dice", "aji", "pq", "nuclei_true", "nuclei_pred")


def centroids(labels: np.ndarray) -> np.ndarray:
    """``(n, 2)`` row/column centroids of the instances 1..max of ``labels`` (present ones)."""
    ids = np.unique(labels[labels > 0])
    if ids.size == 0:
        return np.zeros((0, 2))
    return np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, ids), dtype=np.float64)


def detection_counts(true: np.ndarray, pred: np.ndarray, radius_px: float
                     ) -> tuple[int, int, int]:
    """``(tp, fp, fn)``: instances matched one-to-one by centroids within ``radius_px``.

    The assignment maximises the number of matches and, among those, minimises the summed
    distance (Hungarian on distances, pairs beyond the radius forbidden).
    """
    a, b = centroids(true), centroids(pred)
    if len(a) == 0 or len(b) == 0:
        return 0, len(b), len(a)
    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    allowed = distance <= radius_px
    cost = np.where(allowed, distance, radius_px * 1e3 + 1.0)
    rows, cols = linear_sum_assignment(cost)
    tp = int(allowed[rows, cols].sum())
    return tp, len(b) - tp, len(a) - tp


def detection_scores(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    """Precision, recall and F1 of pooled counts (None where undefined)."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def translate_tile(runner: ModelRunner, image: np.ndarray, mpp: float | None) -> np.ndarray:
    """An RGB uint8 tile translated at the translator's working resolution.

    Returns the translation on the working grid (the tile resampled from ``mpp`` to
    ``spec.input.resolution``; as it is without either), reflect-padded to a multiple of 4
    for the generator and cut back.
    """
    working = runner.spec.input.resolution
    if mpp and working:
        image = resize_rgb(image, working_shape(image.shape[:2], mpp, working))
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
    x = padded.transpose(2, 0, 1)[None].astype(np.float32)
    out = np.asarray(runner(x))[0, :, :h, :w].transpose(1, 2, 0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


class _Images:
    """``data`` seen through other images of its items (duck-types what
    :func:`training.tasks.nuclei.native.tile_maps` reads of a :class:`Dataset`)."""

    def __init__(self, data: Dataset, images: dict[str, np.ndarray]) -> None:
        self.path, self.items, self._images, self._data = data.path, data.items, images, data

    def read_image(self, item) -> np.ndarray:
        return self._images[item.id]

    def read_mask(self, item) -> np.ndarray | None:
        return self._data.read_mask(item)


def _scored(pairs: list[tuple[np.ndarray, np.ndarray]], mpps: list[float | None],
            radius_um: float) -> dict[str, Any]:
    counts = np.zeros(3, dtype=np.int64)
    for (true, pred), mpp in zip(pairs, mpps, strict=True):
        counts += detection_counts(true, pred, radius_um / (mpp or 0.5))
    return {**detection_scores(*(int(c) for c in counts)), **mean_instance_scores(pairs)}


def ihc_nuclei_comparison(translator: LoadedModel, data: Dataset, device: torch.device, *,
                          nuclei: LoadedModel | None = None, radius_um: float = RADIUS_UM,
                          options: ClassicalNucleiOptions | None = None) -> dict[str, Any]:
    """Score nuclei found in the IHC tiles of ``data`` three ways (see the module docstring).

    Parameters
    ----------
    translator : LoadedModel
        The ``image_translation`` checkpoint (``ihc-to-he``).
    data : Dataset
        Its domain-A items with an instance mask are scored.
    device : torch.device
    nuclei : LoadedModel, optional
        The H&E nuclei model; default the registry's shipped ``nuclei-hovernet``.
    radius_um : float
        Match radius of the detection scores.
    options : ClassicalNucleiOptions, optional
        Of the classical method; its ``mpp`` is replaced by each tile's.

    Returns
    -------
    dict
        ``rows`` (``{method: scores}``), ``tiles``, ``nuclei_model``, ``radius_um``,
        ``classical_options`` and ``table`` (Markdown).

    Raises
    ------
    DataError
        No domain-A item with a mask, or the nuclei model is unavailable or not HoVer-Net.
    """
    indices = [i for i, item in enumerate(data.items)
               if item.domain == "A" and item.mask is not None]
    if not indices:
        raise DataError(f"{data.path}: no IHC (domain A) items with nuclei masks to score")
    nuclei = nuclei or _shipped_nuclei_model()
    if nuclei.spec.task != "instance_segmentation":
        raise DataError(f"{nuclei.path}: {nuclei.spec.name!r} is not a nuclei instance model")
    runner = ModelRunner(translator.model.to(device), translator.spec, device=device,
                         batch_size=1)
    post = postprocess_options(spec=nuclei.spec)
    items = [data.items[i] for i in indices]
    mpps = [item.region.get("mpp") for item in items]
    raw = {item.id: np.clip(rgb(data.read_image(item)), 0, 255).astype(np.uint8)
           for item in items}
    translated = {item.id: translate_tile(runner, raw[item.id], mpp)
                  for item, mpp in zip(items, mpps, strict=True)}
    # tile_maps resizes whatever it reads to the nuclei model's working grid
    views = {"raw": _Images(data, raw), "translated": _Images(data, translated)}
    rows: dict[str, dict[str, Any]] = {}
    for key, label in (("raw", "on raw IHC"), ("translated", "on translated H&E")):
        pairs = [(maps.true, maps.instances(post)[0])
                 for maps in tile_maps(nuclei, views[key], indices, device)]
        rows[f"{nuclei.spec.name} {label}"] = _scored(pairs, mpps, radius_um)
    opts = options or ClassicalNucleiOptions()
    pairs = [(np.asarray(data.read_mask(item)).astype(np.int64),
              classical_nuclei(raw[item.id], dataclasses.replace(opts, mpp=float(mpp))
                               if mpp else opts))
             for item, mpp in zip(items, mpps, strict=True)]
    rows["classical on raw IHC"] = _scored(pairs, mpps, radius_um)
    return {"rows": rows, "tiles": [item.id for item in items],
            "nuclei_model": str(nuclei.path), "radius_um": radius_um,
            "classical_options": dataclasses.asdict(opts), "table": nuclei_table(rows)}


def _shipped_nuclei_model() -> LoadedModel:
    path = ModelRegistry().checkpoint(DEFAULT_NUCLEI_MODEL)
    if path is None:
        raise DataError(f"no shipped {DEFAULT_NUCLEI_MODEL!r} weights to find nuclei with")
    return load_checkpoint(path, device="cpu")


def nuclei_table(rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: detection F1, precision, recall, Dice, AJI, PQ, nuclei counts."""
    head = ["F1", "precision", "recall", "Dice", "AJI", "PQ", "nuclei (true)",
            "nuclei (found)"]
    return score_table(rows, head, _COLUMNS, missing="-")
