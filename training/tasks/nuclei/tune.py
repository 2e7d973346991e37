"""Choose a nuclei checkpoint's post-processing, and the classical baseline's options, on a split.

``python -m training tune-nuclei --model CKPT --data DIR --split train`` runs the network once
per tile of one side of the ``nuclei`` task's patient-wise split
(:func:`~training.tasks.nuclei.compare.evaluation_indices`), then segments the saved outputs
with every option set of a grid (:func:`hovernet_instances`) and scores each as the task does
(:func:`training.metrics.nuclei_metrics` one tile at a time, mean over tiles). The classical
baseline (:func:`~training.tasks.nuclei.compare.baseline_scores`) is scored on the same tiles
for nucleus radius 3-7 µm x sigma 1, 2. Both tables are printed; ``--out`` writes them as JSON;
``--write`` copies the checkpoint (weights byte-identical) with the best-by-PQ options saved
in its spec (``extra["postprocess"]``, how they were chosen in ``extra["postprocess_selection"]``).
Choose on ``train``, report on ``val`` (``evaluate --split val``): those tiles stay unseen.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions
from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models._checkpoint_files import sha256_of, swap_in_pair, temporary_sibling
from napari_neuroseg.models.checkpoint import (
    CheckpointError,
    LoadedModel,
    checkpoint_paths,
    load_checkpoint,
    read_sidecar,
)
from napari_neuroseg.models.spec import ModelSpec
from training.tasks._common import DataError
from training.tasks.nuclei.compare import baseline_scores, comparison_table, evaluation_indices
from training.tasks.nuclei.native import TileMaps, tile_maps
from training.tasks.nuclei.scoring import METRIC_KEYS, mean_instance_scores
from training.tasks.nuclei.task import POSTPROCESS, postprocess_options

__all__ = ["BASELINE_GRID", "DEFAULT_GRID", "SMALL_GRID", "load_grid", "network_outputs",
           "score_options", "tune", "tune_sources", "write_checkpoint"]

HELP = "choose a nuclei checkpoint's post-processing (and the baseline's radius) on a split"
#: (np_threshold, marker_threshold, ksize), min_size 10: the 17 settings the shipped
#: nuclei-hovernet's options were chosen from (a 3 x 3 grid at ksize 11, then refinements).
DEFAULT_GRID = tuple(
    {"np_threshold": n, "marker_threshold": m, "min_size": 10, "ksize": k}
    for n, m, k in (*itertools.product((0.4, 0.5, 0.6), (0.3, 0.4, 0.5), (11,)),
                    (0.5, 0.4, 7), (0.5, 0.4, 15), (0.5, 0.5, 15), (0.6, 0.5, 15),
                    (0.6, 0.6, 11), (0.6, 0.6, 15), (0.6, 0.7, 11), (0.7, 0.5, 11)))
#: Classical baseline options scored: nucleus radius (µm) x sigma (px), other defaults.
#: Settings for models working at 0.5 µm/px (20x), where nuclei are 3-7 px in radius
#: (``--grid small``): markers opened with a radius-1 disc and unmarked components kept, over
#: thresholds and Sobel sizes, plus the paper's marker handling for comparison.
SMALL_GRID = (*(
    {"np_threshold": n, "marker_threshold": m, "min_size": 8, "ksize": k, "marker_radius": 1,
     "keep_unmarked": True}
    for n, m, k in itertools.product((0.4, 0.5, 0.6), (0.3, 0.45, 0.6), (5, 7))), *(
    {"np_threshold": 0.5, "marker_threshold": 0.45, "min_size": 8, "ksize": k,
     "marker_radius": r, "keep_unmarked": keep}
    for k, r, keep in ((9, 1, True), (7, 0, True), (7, 1, False), (7, 2, False))))
BASELINE_GRID = tuple({"nucleus_radius_um": r, "sigma": s}
                      for r, s in itertools.product((3.0, 3.5, 4.0, 5.0, 6.0, 7.0), (1.0, 2.0)))


def load_grid(grid: str | list[dict] = "default") -> list[dict[str, Any]]:
    """Post-processing option sets: ``"default"`` (:data:`DEFAULT_GRID`), ``"small"``
    (:data:`SMALL_GRID`), a JSON file with a
    list of objects, or such a list. Missing keys take the task's defaults.

    Raises
    ------
    ValueError
        An unknown key, ``ksize`` not odd and >= 3, a threshold outside [0, 1], or no sets.
    """
    if isinstance(grid, str):
        named = {"default": DEFAULT_GRID, "small": SMALL_GRID}
        grid = list(named[grid]) if grid in named else json.loads(
            Path(grid).read_text(encoding="utf-8"))
    defaults, out = postprocess_options(), []
    for entry in grid:
        if unknown := set(entry) - set(POSTPROCESS):
            raise ValueError(f"grid: unknown option(s) {sorted(unknown)}; known: {POSTPROCESS}")
        out.append(postprocess_options(SimpleNamespace(**{**defaults, **entry})))
    if not out:
        raise ValueError("grid: no option sets")
    return out


def network_outputs(loaded: LoadedModel, data: Dataset, indices, device: torch.device,
                    batch_size: int = 8) -> list[TileMaps]:
    """The network's maps of each tile of ``indices`` at the model's resolution (one forward
    pass each, :func:`training.tasks.nuclei.native.tile_maps`); ``batch_size`` is unused."""
    return list(tile_maps(loaded, data, indices, device))


def score_options(outputs: list[TileMaps], post: dict[str, Any]) -> dict[str, Any]:
    """Mean Dice, AJI, DQ, SQ, PQ over tiles (NaN-aware) of ``post`` applied to ``outputs``,
    with the nuclei counted, scored on the tiles' grid as ``evaluate`` scores."""
    return mean_instance_scores((maps.true, maps.instances(post)[0]) for maps in outputs)


def _best(rows: list[dict[str, Any]]) -> int:
    """Index of the highest-PQ row (the first of ties; a None PQ counts as -1)."""
    pq = [-1.0 if row["pq"] is None else row["pq"] for row in rows]
    return pq.index(max(pq))


def tune(loaded: LoadedModel, data: Dataset, device: torch.device, *, split: str = "train",
         val_fraction: float = 0.2, seed: int = 0, grid: str | list = "default",
         baseline: bool = True, batch_size: int = 8, max_tiles: int | None = None
         ) -> dict[str, Any]:
    """Score every option set of ``grid`` (and :data:`BASELINE_GRID`) on the tiles of ``split``.

    ``max_tiles`` scores at most that many of them, evenly spread over the split (a large
    source such as CoNSeP's 352 training patches does not need all of them to choose).

    Returns
    -------
    dict
        ``split``, ``val_fraction``, ``seed``, ``patients``, ``tiles`` (item ids), ``grid``
        (rows: options + scores), ``best`` (its highest-PQ options), ``saved`` (the
        checkpoint's own options and their scores), ``baseline_grid``, ``baseline_best``
        (None without ``baseline``) and ``tables`` (Markdown).
    """
    if data.task != "nuclei":
        raise DataError(f"{data.path}: tune-nuclei needs a 'nuclei' dataset, not {data.task!r}")
    options = load_grid(grid)
    indices, patients = evaluation_indices(data, split, val_fraction, seed)
    if max_tiles is not None and len(indices) > max_tiles:
        indices = indices[np.linspace(0, len(indices) - 1, max_tiles).round().astype(int)]
        patients = tuple(dict.fromkeys(data.items[int(i)].patient_id for i in indices))
    if len(indices) == 0:
        raise DataError(f"{data.path}: no tiles in split {split!r}")
    outputs = network_outputs(loaded, data, indices, device, batch_size)
    rows = [{**post, **score_options(outputs, post)} for post in options]
    best = {k: rows[_best(rows)][k] for k in POSTPROCESS}
    saved = postprocess_options(spec=loaded.spec)
    base = [{**o, **baseline_scores(data, indices, ClassicalNucleiOptions(**o), tile_mpp=True)}
            for o in (BASELINE_GRID if baseline else ())]
    result: dict[str, Any] = {
        "split": split, "val_fraction": val_fraction, "seed": seed, "patients": list(patients),
        "tiles": [data.items[int(i)].id for i in indices], "grid": rows, "best": best,
        "saved": {**saved, **score_options(outputs, saved)}, "baseline_grid": base,
        "baseline_best": BASELINE_GRID[_best(base)] if base else None}
    result["tables"] = _tables(result)
    return result


def tune_sources(loaded: LoadedModel, root: str | Path, device: torch.device,
                 **options: Any) -> dict[str, Any]:
    """:func:`tune` on each source dataset under ``root``; rows averaged over sources.

    Each setting's scores are the means of its per-source scores, so every source counts the
    same whatever its number of tiles; ``best`` is the highest mean PQ. ``per_source`` holds
    each source's own result (without its tables).
    """
    folders = sorted(p for p in Path(root).iterdir() if (p / "manifest.json").is_file())
    if not folders:
        raise DataError(f"{root}: no source datasets (sub-folders with a manifest.json)")
    parts = {}
    for folder in folders:
        part = tune(loaded, Dataset.open(folder), device, **options)
        part.pop("tables")
        parts[folder.name] = part

    def mean_rows(key: str) -> list[dict[str, Any]]:
        columns = list(zip(*(part[key] for part in parts.values()), strict=True))
        rows = []
        for same in columns:
            row = {k: v for k, v in same[0].items() if k not in (*METRIC_KEYS, "n_images",
                                                                  "nuclei_true", "nuclei_pred")}
            for k in (*METRIC_KEYS, "n_images", "nuclei_true", "nuclei_pred"):
                values = [r.get(k) for r in same]
                row[k] = _mean(values) if k in METRIC_KEYS else int(sum(v or 0 for v in values))
            rows.append(row)
        return rows

    first = next(iter(parts.values()))
    grid, base = mean_rows("grid"), mean_rows("baseline_grid")
    result: dict[str, Any] = {
        "split": first["split"], "val_fraction": first["val_fraction"], "seed": first["seed"],
        "patients": [p for part in parts.values() for p in part["patients"]],
        "tiles": [t for part in parts.values() for t in part["tiles"]], "grid": grid,
        "best": {k: grid[_best(grid)][k] for k in POSTPROCESS},
        "saved": {**first["saved"], **{k: _mean([part["saved"].get(k) for part in
                                                   parts.values()]) for k in METRIC_KEYS}},
        "baseline_grid": base,
        "baseline_best": BASELINE_GRID[_best(base)] if base else None,
        "sources": list(parts), "per_source": parts}
    result["tables"] = _tables(result)
    return result


def _mean(values: list[Any]) -> float | None:
    found = [v for v in values if v is not None]
    return float(np.mean(found)) if found else None


def _tables(result: dict[str, Any]) -> str:
    """The model grid and the baseline grid as Markdown (one row per setting, best marked)."""
    parts = []
    for key, names in (("grid", POSTPROCESS), ("baseline_grid", ("nucleus_radius_um", "sigma"))):
        rows, best = result[key], _best(result[key]) if result[key] else -1
        named = {" ".join(f"{n}={r[n]}" for n in names) + (" **best**" if i == best else ""): r
                 for i, r in enumerate(rows)}
        parts += [f"{key} ({result['split']}, {len(result['tiles'])} tiles)\n\n"
                  + comparison_table(named)] if rows else []
    return "\n\n".join(parts)


def write_checkpoint(source, target, post: dict[str, Any], selection: dict[str, Any]) -> Path:
    """Copy checkpoint ``source`` to ``target`` with ``post`` as its saved post-processing.

    The weights are copied byte for byte (the sidecar's SHA-256 still holds); the sidecar is
    ``source``'s with ``spec.extra`` ``"postprocess"`` = ``post`` and
    ``"postprocess_selection"`` = ``selection``. Both files are written under temporary
    names, then renamed into place (weights, then sidecar). Returns the new weights file.

    Raises
    ------
    CheckpointError
        ``source``'s weights do not match its sidecar, or the new spec is invalid.
    """
    weights, sidecar = checkpoint_paths(source)
    record = read_sidecar(sidecar)
    if sha256_of(weights) != record.get("weights_sha256"):
        raise CheckpointError(f"{weights}: checkpoint does not match its sidecar")
    record["spec"] = {**record["spec"], "extra": {
        **record["spec"].get("extra", {}), "postprocess": dict(post),
        "postprocess_selection": selection}}
    ModelSpec.from_dict(record["spec"])  # still a valid spec
    out_weights, out_sidecar = checkpoint_paths(target)
    out_weights.parent.mkdir(parents=True, exist_ok=True)
    tmp_weights, tmp_sidecar = temporary_sibling(out_weights), temporary_sibling(out_sidecar)
    try:
        shutil.copyfile(weights, tmp_weights)
        if sha256_of(tmp_weights) != record["weights_sha256"]:
            raise CheckpointError(f"{tmp_weights}: copy of {weights} differs")
        tmp_sidecar.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        swap_in_pair(tmp_weights, out_weights, tmp_sidecar, out_sidecar)
    finally:
        for tmp in (tmp_weights, tmp_sidecar):
            tmp.unlink(missing_ok=True)
    return out_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tune-nuclei`` options."""
    parser.add_argument("--model", required=True, help="nuclei checkpoint")
    parser.add_argument("--data", required=True, help="nuclei dataset folder")
    parser.add_argument("--split", choices=("train", "val", "all"), default="train",
                        help="tiles to choose on (the nuclei task's patient-wise split)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default="default",
                        help="'default' (the 17 settings) or a JSON file: a list of objects "
                        "with np_threshold, marker_threshold, min_size, ksize")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline grid")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tiles", type=int, default=None,
                        help="score at most this many tiles of the split (of each source), "
                        "evenly spread over it")
    parser.add_argument("--out", default=None, help="write tune-nuclei.json into this folder")
    parser.add_argument("--write", default=None, metavar="CKPT_OUT",
                        help="write a copy of the checkpoint with the best options saved")


def run_cli(args: argparse.Namespace) -> int:
    """``tune-nuclei``: tune, print the tables, write the JSON and the checkpoint if asked."""
    from napari_neuroseg.models.device import resolve_device
    from training.runfolder import atomic_write_json
    from training.tasks.nuclei.sources import is_source_folder

    loaded = load_checkpoint(args.model, device="cpu")
    options = {"split": args.split, "val_fraction": args.val_fraction, "seed": args.seed,
               "grid": args.grid, "baseline": not args.no_baseline,
               "batch_size": args.batch_size, "max_tiles": args.max_tiles}
    if is_source_folder(args.data):
        result = tune_sources(loaded, args.data, resolve_device(args.device), **options)
    else:
        result = tune(loaded, Dataset.open(args.data), resolve_device(args.device), **options)
    print(result.pop("tables"), flush=True)
    result = {"model": str(args.model), "data": str(args.data), **result}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "tune-nuclei.json", result)
    if args.write:
        best = result["grid"][_best(result["grid"])]
        method = "highest mean PQ over tiles" + (
            " (mean over sources " + ", ".join(result["sources"]) + ")"
            if "sources" in result else "")
        selection = {"method": f"{method} (python -m training tune-nuclei)",
                     "split": args.split, "val_fraction": args.val_fraction, "seed": args.seed,
                     "patients": result["patients"], "tiles": len(result["tiles"]),
                     "grid": args.grid, "settings": len(result["grid"]),
                     "scores": {k: best[k] for k in METRIC_KEYS}}
        print(f"wrote {write_checkpoint(args.model, args.write, result['best'], selection)}")
    print(json.dumps({"best": result["best"], "baseline_best": result["baseline_best"]}))
    return 0
