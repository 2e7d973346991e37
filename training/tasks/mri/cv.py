"""``python -m training cv-mri``: the FLAIR MRI recipe's networks and a FLAIR threshold,
cross-validated.

Each ``--run NAME=FOLDER`` names a folder of fold runs, ``FOLDER/fold0 ... fold{K-1}``, made by
``python -m training mri --set folds=K --set fold=I`` (patient-wise folds,
:func:`training.tasks.mri.split.patient_kfold`). For every fold, the fold's checkpoint (its
last epoch, so no validation patient chose it) predicts every slice; then, per volume
(:mod:`training.tasks.mri.volumes`):

- **no clean-up**: probability >= 0.5;
- **clean-up**: the same, then 3-D components under :data:`DEFAULT_CLEANUP` voxels or on one
  slice are dropped;
- **tuned clean-up**: the clean-up of :data:`CLEANUPS` (at threshold 0.5, which the plugin
  uses) with the best mean volume Dice on the fold's *training* patients.

The **FLAIR baseline** scores each voxel by its FLAIR z-score within the volume's non-zero
voxels and takes the z threshold (and, in its clean-up row, the clean-up) with the best
training-patient volume Dice. Every validation patient is scored exactly once, by the fold
that did not train on it; the table gives the mean over all patients and, in brackets, the
spread of the fold means. ``--out`` writes ``cv.json`` and ``cv.md``.

The clean-up to ship with a run's final model is chosen the same way on the out-of-fold
predictions of all patients (each patient predicted by the fold that did not train on it):
``recommended`` in ``cv.json``; ``--write NAME CKPT_IN CKPT_OUT`` copies a checkpoint with it
as ``spec.extra["postprocess"]``, which the MRI widget applies by default.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import load_checkpoint
from training.tasks.mri.split import mri_split
from training.tasks.mri.task import SliceData
from training.tasks.mri.volumes import (
    PostProcess,
    Volume,
    dice,
    patient_volumes,
    score_volumes,
)

HELP = "cross-validation table of mri runs (per-volume Dice) with a FLAIR-threshold baseline"
#: Probability thresholds tried on the training patients (the plugin thresholds at 0.5).
THRESHOLDS = (0.5,)
#: Clean-ups tried on the training patients: (min_voxels, drop_single_slice).
CLEANUPS = ((0, False), (0, True), (50, True), (100, True), (200, True), (400, True),
            (800, True), (1600, True))
#: The fixed clean-up of the "clean-up" rows.
DEFAULT_CLEANUP = PostProcess(0.5, min_voxels=100, drop_single_slice=True)
#: FLAIR z-score thresholds of the baseline.
BASELINE_Z = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)
FLAIR_CHANNEL = 1


def predict_items(checkpoint: str | Path, data: Dataset, device: str = "cpu",
                  batch_size: int = 16) -> dict[int, np.ndarray]:
    """Item index -> ``(H, W)`` float16 probability of every slice of ``data``."""
    loaded = load_checkpoint(checkpoint, device=device)
    model = loaded.model.eval()
    loader = DataLoader(SliceData(data, np.arange(len(data.items)), loaded.spec, False),
                        batch_size=batch_size)
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        for x, _, index in loader:
            prob = torch.sigmoid(model(x.to(device)))[:, 0].float().cpu().numpy()
            out.update({int(i): p.astype(np.float16) for i, p in zip(index, prob, strict=True)})
    return out


def flair_zscores(data: Dataset, volume: Volume) -> np.ndarray:
    """``(n_present, H, W)`` FLAIR z-scores over the volume's non-zero FLAIR voxels."""
    flair = np.stack([data.read_image(data.items[i])[..., FLAIR_CHANNEL]
                      for i in volume.items]).astype(np.float32)
    inside = flair[flair > 0]
    if inside.size < 2:
        return np.zeros_like(flair)
    return ((flair - inside.mean()) / max(float(inside.std()), 1e-6)).astype(np.float16)


def choose(volumes: Sequence[Volume], scores: Any, thresholds: Sequence[float],
           cleanups: Sequence[tuple[int, bool]]) -> tuple[PostProcess, float]:
    """The setting with the best mean volume Dice on ``volumes``, and that Dice (ties: the
    first in grid order).

    The same as scoring every setting with :func:`score_volumes`, but each volume's 3-D
    components are labelled once per threshold and every clean-up is a choice among them.
    """
    grid = list(itertools.product(thresholds, cleanups))
    scores_grid = np.zeros((len(grid), len(volumes)))
    structure = ndimage.generate_binary_structure(3, 3)  # clean_labels' default, 26 neighbours
    for v, volume in enumerate(volumes):
        raw = scores(volume) if callable(scores) else np.stack([scores[i] for i in volume.items])
        placed = volume.place(np.asarray(raw))
        for t in thresholds:
            mask = placed >= t
            components, n = ndimage.label(mask, structure=structure)
            sizes = np.bincount(components.ravel(), minlength=n + 1)
            z_extent = np.array([0] + [sl[0].stop - sl[0].start
                                       for sl in ndimage.find_objects(components)])
            for g, (gt, (min_voxels, single)) in enumerate(grid):
                if gt != t:
                    continue
                drop = (sizes < min_voxels) | ((z_extent == 1) & single)
                drop[0] = False
                kept = mask & ~drop[components] if drop.any() else mask
                scores_grid[g, v] = dice(kept[volume.planes], volume.truth)
    means = scores_grid.mean(axis=1) if len(volumes) else np.zeros(len(grid))
    best = int(np.argmax(means))  # first of the ties
    t, (min_voxels, single) = grid[best]
    return PostProcess(t, min_voxels, single), float(means[best])


def fold_rows(data: Dataset, volumes: Sequence[Volume], fold_dir: Path, *,
              device: str = "cpu", batch_size: int = 16,
              baseline: dict[str, np.ndarray] | None = None
              ) -> tuple[dict[str, dict[str, Any]], dict[int, np.ndarray]]:
    """The rows of one fold run: its model (three settings) and, given the FLAIR z-scores of
    every volume, the baseline (two settings), each scored on the fold's validation
    patients with the settings chosen on its training patients; and the model's
    probabilities on the validation patients' items."""
    config = json.loads((fold_dir / "config.json").read_text())
    split = mri_split(data, config.get("val_fraction", 0.2), config["seed"],
                      stratify_tumour=config.get("stratify_tumour", True),
                      folds=config["folds"], fold=config["fold"])
    val_items = set(int(i) for i in split.val_indices)
    val = [v for v in volumes if v.items[0] in val_items]
    train = [v for v in volumes if v.items[0] not in val_items]
    checkpoint = fold_dir / "checkpoints" / "last.safetensors"
    probs = predict_items(checkpoint, data, device, batch_size)
    tuned, train_dice = choose(train, probs, THRESHOLDS, CLEANUPS)
    rows = {"no clean-up": (PostProcess(), None), "clean-up": (DEFAULT_CLEANUP, None),
            "tuned clean-up": (tuned, train_dice)}
    out = {name: _row(val, probs, post, score) for name, (post, score) in rows.items()}
    if baseline is not None:
        def z(volume: Volume) -> np.ndarray:
            return baseline[volume.patient]

        for name, cleanups in (("baseline", CLEANUPS[:1]), ("baseline clean-up", CLEANUPS)):
            post, score = choose(train, z, BASELINE_Z, cleanups)
            out[name] = _row(val, z, post, score)
    for row in out.values():
        row.update(fold=config["fold"], val_patients=[v.patient for v in val])
    return out, {i: probs[i] for v in val for i in v.items}


def _row(val: Sequence[Volume], scores: Any, post: PostProcess,
         train_dice: float | None) -> dict[str, Any]:
    return {**score_volumes(val, scores, post), "setting": post.as_dict(),
            "setting_text": post.describe(), "train_volume_dice": train_dice}


def pool(fold_results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """All folds of one row pooled: the mean over every validation patient, the fold means'
    spread, summed slice counts and the settings each fold chose."""
    by_patient = {p: d for r in fold_results for p, d in r["volume_dice_by_patient"].items()}
    fold_means = [r["volume_dice"] for r in fold_results]
    total = {k: sum(r[k] for r in fold_results)
             for k in ("tumour_slices", "missed_tumour_slices", "empty_slices",
                       "fp_empty_slices", "predicted_voxels", "reference_voxels")}
    weights = [r["tumour_slices"] for r in fold_results]
    slice_dice = float(np.average([r["slice_dice_tumour"] for r in fold_results],
                                  weights=weights)) if sum(weights) else 0.0
    return {"volume_dice": float(np.mean(list(by_patient.values()))),
            "volume_dice_fold_min": float(min(fold_means)),
            "volume_dice_fold_max": float(max(fold_means)),
            "volume_dice_median": float(np.median(list(by_patient.values()))),
            "slice_dice_tumour": slice_dice, **total,
            "fp_empty_share": total["fp_empty_slices"] / max(total["empty_slices"], 1),
            "patients": len(by_patient), "volume_dice_by_patient": by_patient,
            "settings": [r["setting_text"] for r in fold_results]}


def cross_validate(data: Dataset, runs: dict[str, Path], *, baseline: bool = True,
                   device: str = "cpu", batch_size: int = 16,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """``{"rows": ..., "recommended": ...}``: the pooled rows of every run (``"<name>,
    <setting>"``) and of the baseline, and per run the clean-up with the best volume Dice on
    the out-of-fold predictions of all patients."""
    volumes = patient_volumes(data)
    zscores = ({v.patient: flair_zscores(data, v) for v in volumes} if baseline else None)
    rows: dict[str, list[dict[str, Any]]] = {}
    recommended: dict[str, dict[str, Any]] = {}
    for n, (name, folder) in enumerate(runs.items()):
        folds = sorted(p for p in folder.iterdir() if p.name.startswith("fold") and p.is_dir())
        if not folds:
            raise FileNotFoundError(f"{folder}: no fold* run folders")
        out_of_fold: dict[int, np.ndarray] = {}
        for fold_dir in folds:
            log(f"{name}: {fold_dir.name}")
            result, val_probs = fold_rows(data, volumes, fold_dir, device=device,
                                          batch_size=batch_size,
                                          baseline=zscores if n == 0 else None)
            out_of_fold.update(val_probs)
            for setting, row in result.items():
                key = setting if setting.startswith("baseline") else f"{name}, {setting}"
                rows.setdefault(key, []).append(row)
        scored = [v for v in volumes if all(i in out_of_fold for i in v.items)]
        post, score = choose(scored, out_of_fold, THRESHOLDS, CLEANUPS)
        recommended[name] = {"postprocess": post.as_dict(), "text": post.describe(),
                             "out_of_fold_volume_dice": score, "patients": len(scored)}
    return {"rows": {key: pool(results) for key, results in rows.items()},
            "recommended": recommended}


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| model, post-processing | volume Dice (mean over patients) [fold means] | "
             "median | slice Dice, tumour slices | tumour slices missed | "
             "empty slices with a false positive |",
             "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        lines.append(
            f"| {key} | {r['volume_dice']:.3f} [{r['volume_dice_fold_min']:.3f}-"
            f"{r['volume_dice_fold_max']:.3f}] | {r['volume_dice_median']:.3f} | "
            f"{r['slice_dice_tumour']:.3f} | {r['missed_tumour_slices']} / {r['tumour_slices']}"
            f" | {r['fp_empty_slices']} / {r['empty_slices']} ({r['fp_empty_share']:.1%}) |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``cv-mri`` options."""
    parser.add_argument("--data", required=True, help="mri dataset folder (export layout)")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER",
                        help="a folder of fold runs (fold0, fold1, ...), repeatable")
    parser.add_argument("--no-baseline", action="store_true", help="skip the FLAIR baseline")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=None, help="write cv.json and cv.md here")
    parser.add_argument("--write", nargs=3, default=None, metavar=("NAME", "CKPT_IN", "CKPT_OUT"),
                        help="copy CKPT_IN (e.g. the final model of run NAME) to CKPT_OUT with "
                        "NAME's recommended clean-up as spec.extra['postprocess']")


def run_cli(args: argparse.Namespace) -> int:
    """``cv-mri``: score the runs, print the table, write it if asked."""
    from training.runfolder import atomic_write_json, atomic_write_text

    runs = {}
    for item in args.run:
        name, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--run {item!r}: expected NAME=FOLDER")
        runs[name] = Path(folder)
    if args.write and args.write[0] not in runs:
        raise SystemExit(f"--write {args.write[0]}: not one of the --run names {sorted(runs)}")
    result = cross_validate(Dataset.open(args.data), runs, baseline=not args.no_baseline,
                            device=args.device, batch_size=args.batch_size)
    text = table(result["rows"]) + "\n\nClean-up chosen on the out-of-fold predictions:\n" + \
        "\n".join(f"- {name}: {r['text']} (volume Dice {r['out_of_fold_volume_dice']:.3f}, "
                  f"{r['patients']} patients)" for name, r in result["recommended"].items())
    print(text, flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "cv.json", result)
        atomic_write_text(out / "cv.md", text + "\n")
    if args.write:
        from training.tasks.nuclei.tune import write_checkpoint

        name, source, target = args.write
        chosen = result["recommended"][name]
        written = write_checkpoint(source, target, chosen["postprocess"], {
            "how": f"cv-mri: the clean-up with the best mean volume Dice on the out-of-fold "
                   f"predictions of {chosen['patients']} patients (run {name})",
            "out_of_fold_volume_dice": chosen["out_of_fold_volume_dice"]})
        print(f"wrote {written}", flush=True)
    return 0
