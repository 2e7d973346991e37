"""A nuclei checkpoint against the classical baseline, on the same tiles in the same run.

``python -m training evaluate --model CKPT --data DIR --baseline classical --split val``
segments the chosen tiles of a ``nuclei`` dataset twice: with the checkpoint (its saved
post-processing, as :func:`training.tasks.nuclei.evaluate`) and with
:func:`napari_neuroseg.analysis.nuclei_classical.classical_nuclei` (hematoxylin by colour
deconvolution, Otsu threshold, distance-transform watershed), and scores both with the same
function (:func:`training.metrics.nuclei_metrics`, one tile at a time, mean over tiles):
Dice, AJI, PQ, DQ, SQ and the number of tiles.

Which tiles: ``split="all"`` every tile of the dataset; ``"val"`` (or ``"train"``) the side
of the patient-wise split :func:`training.tasks._common.task_split` makes with
``val_fraction`` and ``seed``, the function and defaults (0.2, 0) the ``nuclei`` training
task uses, so with the dataset and values of a training run it gives that run's validation
tiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions, classical_nuclei
from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import LoadedModel
from training.tasks._common import DataError, task_split
from training.tasks.nuclei.data import rgb
from training.tasks.nuclei.scoring import mean_instance_scores
from training.tasks.nuclei.task import postprocess_options

__all__ = ["BASELINES", "SPLITS", "baseline_options", "baseline_scores", "compare",
           "comparison_table", "evaluation_indices", "score_table"]

BASELINES = ("classical",)
SPLITS = ("all", "val", "train")
#: Columns of the comparison table, in order.
COLUMNS = ("dice", "aji", "pq", "dq", "sq", "n_images", "nuclei_true", "nuclei_pred")


def evaluation_indices(data: Dataset, split: str = "all", val_fraction: float = 0.2,
                       seed: int = 0) -> tuple[np.ndarray, tuple]:
    """The dataset items to score and their patients.

    Parameters
    ----------
    data : Dataset
    split : {"all", "val", "train"}
        Every item, or one side of the ``nuclei`` task's patient-wise split.
    val_fraction, seed : float, int
        The split's options (the ``nuclei`` task's defaults: 0.2, 0).

    Returns
    -------
    indices : numpy.ndarray of int64
    patients : tuple
        The patients of those items, in dataset order.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if split == "all":
        indices = np.arange(len(data.items), dtype=np.int64)
    else:
        part = task_split(data, val_fraction, seed)
        indices = part.val_indices if split == "val" else part.train_indices
    patients = tuple(dict.fromkeys(data.items[int(i)].patient_id for i in indices))
    return indices, patients


def baseline_options(pairs: list[str] | None) -> ClassicalNucleiOptions:
    """:class:`ClassicalNucleiOptions` from ``KEY=VALUE`` strings (numbers parsed).

    Raises
    ------
    ValueError
        A string without ``=`` or an unknown key.
    """
    fields = {f.name for f in dataclasses.fields(ClassicalNucleiOptions)}
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"baseline option {pair!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(sorted(fields))}")
        values[key] = None if text.strip().lower() == "none" else _number(text)
    return ClassicalNucleiOptions(**values)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def baseline_scores(data: Dataset, indices, options: ClassicalNucleiOptions | None = None,
                    *, tile_mpp: bool = False) -> dict[str, Any]:
    """Mean Dice, AJI, DQ, SQ, PQ of :func:`classical_nuclei` over the items ``indices``.

    Scored exactly as :func:`training.tasks.nuclei.instance_scores` scores a model: one tile
    at a time with :func:`nuclei_metrics`, NaN-aware mean over tiles, nuclei counted. With
    ``tile_mpp`` each tile is segmented at its own µm/px when the dataset records it (the
    sizes of ``options`` are in µm).
    """
    options = options or ClassicalNucleiOptions()

    def pairs():
        for index in indices:
            item = data.items[int(index)]
            true = data.read_mask(item)
            if true is None:
                raise DataError(f"{data.path}: item {item.id} has no instance mask")
            mpp = item.region.get("mpp")
            opts = dataclasses.replace(options, mpp=float(mpp)) if tile_mpp and mpp else options
            yield (np.asarray(true).astype(np.int64),
                   classical_nuclei(rgb(data.read_image(item)), opts))

    return mean_instance_scores(pairs())


def model_scores(loaded: LoadedModel, data: Dataset, indices, device: torch.device,
                 batch_size: int = 8) -> dict[str, Any]:
    """The checkpoint's scores on the items ``indices`` (its saved post-processing), at the
    model's resolution and scored on the tiles' grid
    (:func:`training.tasks.nuclei.native.model_scores`); ``batch_size`` is unused (tiles
    go one by one, as their sizes differ)."""
    from training.tasks.nuclei.native import model_scores as native_scores

    return native_scores(loaded, data, indices, device)


def compare(loaded: LoadedModel, data: Dataset, device: torch.device, *,
            baseline: str | None = "classical", split: str = "all", val_fraction: float = 0.2,
            seed: int = 0, options: ClassicalNucleiOptions | None = None,
            batch_size: int = 8, tile_mpp: bool = True) -> dict[str, Any]:
    """Score a nuclei checkpoint and a baseline on the same tiles.

    Parameters
    ----------
    loaded : LoadedModel
        A ``nuclei`` checkpoint (segmented with the post-processing saved in its spec).
    data : Dataset
        A ``nuclei`` dataset.
    device : torch.device
    baseline : {"classical"} or None
        The baseline scored on the same tiles; None: the model only.
    split, val_fraction, seed
        The tiles (:func:`evaluation_indices`).
    options : ClassicalNucleiOptions, optional
        The baseline's options (defaults: 0.5 µm/px, nucleus radius 4 µm).
    batch_size : int
    tile_mpp : bool
        Run the baseline at each tile's recorded µm/px instead of ``options.mpp``.

    Returns
    -------
    dict
        ``rows`` (``{model name: scores, baseline: scores}``, the model first),
        ``split``, ``val_fraction``, ``seed``, ``patients``, ``tiles`` (item ids),
        ``postprocess`` (the model's), ``baseline_options`` and ``table`` (Markdown).

    Raises
    ------
    ValueError
        An unknown baseline or split.
    DataError
        ``data`` is not a ``nuclei`` dataset.
    """
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
    if data.task != "nuclei":
        raise DataError(f"{data.path}: a baseline comparison needs a 'nuclei' dataset, "
                        f"not {data.task!r}")
    opts = options or ClassicalNucleiOptions()
    indices, patients = evaluation_indices(data, split, val_fraction, seed)
    rows = {loaded.spec.name: model_scores(loaded, data, indices, device, batch_size)}
    if baseline is not None:
        rows[baseline] = baseline_scores(data, indices, opts, tile_mpp=tile_mpp)
    return {"split": split, "val_fraction": val_fraction, "seed": seed,
            "patients": list(patients), "tiles": [data.items[int(i)].id for i in indices],
            "postprocess": postprocess_options(spec=loaded.spec),
            "baseline": baseline,
            "baseline_options": dataclasses.asdict(opts) if baseline else None, "rows": rows,
            "table": comparison_table(rows)}


def comparison_table(rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table with one row per method (Dice, AJI, PQ, DQ, SQ, tiles, nuclei)."""
    head = ["Dice", "AJI", "PQ", "DQ", "SQ", "tiles", "nuclei (true)", "nuclei (found)"]
    return score_table(rows, head, COLUMNS, missing="n/a")


def score_table(rows: dict[str, dict[str, Any]], head: list[str], keys: tuple[str, ...],
                missing: str = "n/a") -> str:
    """A Markdown table, one row per method: ``head`` names the columns of ``keys``.

    Floats are written with 3 decimals, other values as they are, absent ones as ``missing``.
    """
    lines = ["| " + " | ".join(["method", *head]) + " |", "|" + "---|" * (len(head) + 1)]
    for name, scores in rows.items():
        cells = [name]
        for key in keys:
            value = scores.get(key)
            cells.append(missing if value is None else
                         f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
