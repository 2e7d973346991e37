"""The ``python -m training`` command line.

Each task is a sub-command. ``info`` reports the environment a run would use (versions and the
device that ``--device auto`` picks), which is the first thing to check on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

from napari_neuroseg import __version__
from training.events import PROGRESS_CHOICES, reporting
from training.tasks import available_tasks


def environment_report() -> dict[str, object]:
    """Versions and compute devices visible to training.

    Returns
    -------
    dict
        ``python``, ``torch``, ``napari_neuroseg``, ``cuda_available``, ``cuda_devices``,
        ``mps_available`` and ``auto_device`` (what ``--device auto`` would choose).
    """
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "napari_neuroseg": __version__,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps_available": mps,
        "auto_device": "cuda" if cuda else "mps" if mps else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=(
            "Train and evaluate napari-neuroseg models headless, on CPU or GPU. "
            "Checkpoints are written as safetensors with a JSON sidecar that the plugin loads."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-neuroseg {__version__}")
    sub = parser.add_subparsers(dest="task", metavar="TASK")
    info = sub.add_parser("info", help="show versions and the device training would use")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    for name, module in available_tasks().items():
        task = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        _task_arguments(task)
        for flag, text in getattr(module, "OPTIONS", {}).items():  # the task's own flags
            task.add_argument(flag, default=None, help=text)
    evaluate = sub.add_parser(
        "evaluate", help="the task's metrics for a checkpoint on a dataset",
        description="Evaluate any checkpoint on any dataset in the export layout with the "
        "metrics of the dataset's task (segmentation: per-class Dice, recall, precision, "
        "confusion matrix; nuclei: Dice, AJI, PQ; CT: patient-level F1, sensitivity, "
        "specificity, AUC; MRI: per-slice and per-volume Dice, false positives on empty "
        "slices).")
    evaluate.add_argument("--model", required=True, help="checkpoint (.safetensors + sidecar)")
    evaluate.add_argument("--data", required=True, help="dataset folder (export layout)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--out", default=None, help="write metrics.json into this folder")
    evaluate.add_argument("--baseline", choices=("classical",), default=None,
                          help="nuclei: also score this baseline on the same tiles (classical: "
                          "hematoxylin, Otsu, distance-transform watershed) and print both rows")
    evaluate.add_argument("--split", choices=("all", "val", "train"), default="all",
                          help="nuclei: score every tile, or one side of the training task's "
                          "patient-wise split (same function, --val-fraction and --seed)")
    evaluate.add_argument("--patients", default=None, metavar="ID,ID,...",
                          help="score only these patients' items (any task), e.g. the "
                          "validation patients a training run printed")
    evaluate.add_argument("--val-fraction", type=float, default=0.2)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--baseline-option", action="append", default=None,
                          metavar="KEY=VALUE", help="classical baseline option, e.g. "
                          "nucleus_radius_um=6 or mpp=0.5 (repeatable)")
    from training import import_keras
    from training.tasks.mri import cv as mri_cv
    from training.tasks.nuclei import tune as nuclei_tune

    nuclei_tune.add_arguments(sub.add_parser("tune-nuclei", help=nuclei_tune.HELP,
                                             description=nuclei_tune.__doc__.split("\n")[0]))
    mri_cv.add_arguments(sub.add_parser("cv-mri", help=mri_cv.HELP,
                                        description=mri_cv.__doc__.split("\n")[0]))
    import_keras.add_arguments(sub.add_parser("import-keras", help=import_keras.HELP,
                                              description=import_keras.DESCRIPTION))
    return parser


def _task_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training task takes."""
    parser.add_argument("--data", required=True, help="dataset folder (export layout)")
    parser.add_argument("--config", default=None, help="YAML file with task options")
    parser.add_argument("--init", default=None, help="checkpoint to start from")
    parser.add_argument("--out", default=None, help="run folder (checkpoints, report)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --out after an interruption")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        dest="set_options",
                        help="any task option over --config, the value read as YAML "
                        "(repeatable), e.g. --set fold=2 --set 'arch={depth: 4}'")
    parser.add_argument("--progress", choices=PROGRESS_CHOICES, default="bar",
                        help="bar: a text bar on stderr; jsonl: one JSON event per line on "
                        "stdout (for the napari Train widget)")


def set_options(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` flags as a dict, each value parsed as YAML (``3``, ``true``,
    ``[2, 3]``, ``{depth: 4}``); a flag without ``=`` is a :class:`ConfigError`."""
    import yaml

    from training.config import ConfigError

    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({error})") from error
    return options


def run_task(args: argparse.Namespace) -> int:
    """Build the task's configuration (defaults, --config, then flags), print it, run it."""
    from training.config import build_config, format_config
    from training.ddp import cleanup, init_distributed
    from training.seeding import seed_everything
    from training.tasks import load_task

    module = load_task(args.task)
    own = [flag.lstrip("-").replace("-", "_") for flag in getattr(module, "OPTIONS", {})]
    overrides = {**set_options(getattr(args, "set_options", None)),
                 **{k: getattr(args, k) for k in
                    ("data", "init", "out", "epochs", "device", "resume", "seed", *own)}}
    config = build_config(module.Config, args.config, overrides)
    dist = init_distributed(config.device)
    try:
        if dist.is_main:
            print(f"effective configuration ({args.task}):\n" + format_config(config),
                  flush=True)

        seed_everything(config.seed)  # the model's initial weights depend on it
        with reporting(getattr(args, "progress", "bar")) as report:
            metrics = module.run(config, dist)
    finally:
        cleanup()
    if dist.is_main:
        print(json.dumps(metrics, indent=2, default=str))
        report.finished(metrics, config.out)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: load the checkpoint and the dataset, compute the task's metrics."""
    from napari_neuroseg.dataset import Dataset
    from napari_neuroseg.models.checkpoint import load_checkpoint
    from napari_neuroseg.models.device import resolve_device
    from training.runfolder import atomic_write_json
    from training.tasks import load_task
    from training.tasks.nuclei.sources import is_source_folder

    if is_source_folder(args.data):
        return _evaluate_sources(args)
    data = Dataset.open(args.data)
    if args.patients:
        data = data.subset(p.strip() for p in args.patients.split(",") if p.strip())
    module = load_task(data.task)
    device = resolve_device(args.device)
    loaded = load_checkpoint(args.model, device="cpu")
    if args.baseline or args.split != "all":
        from training.tasks.nuclei.compare import baseline_options, compare

        metrics = compare(loaded, data, device, baseline=args.baseline, split=args.split,
                          val_fraction=args.val_fraction, seed=args.seed,
                          options=baseline_options(args.baseline_option),
                          batch_size=args.batch_size,
                          tile_mpp=not _mpp_given(args.baseline_option))
        print(metrics.pop("table"), flush=True)
    else:
        metrics = module.evaluate(loaded, data, device, batch_size=args.batch_size)
    metrics = {"model": loaded.spec.name, "checkpoint": str(args.model),
               "data": str(data.path), "task": data.task, "items": len(data.items), **metrics}
    if args.out:
        from pathlib import Path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "metrics.json", metrics)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def _evaluate_sources(args: argparse.Namespace) -> int:
    """``evaluate`` on a folder of nuclei datasets: each source scored on its own (its own
    patient-wise split with ``--split``), one table per source."""
    from pathlib import Path

    from napari_neuroseg.dataset import Dataset
    from napari_neuroseg.models.checkpoint import load_checkpoint
    from napari_neuroseg.models.device import resolve_device
    from training.runfolder import atomic_write_json
    from training.tasks.nuclei.compare import baseline_options, compare

    loaded = load_checkpoint(args.model, device="cpu")
    device, per_source = resolve_device(args.device), {}
    for folder in sorted(p for p in Path(args.data).iterdir() if (p / "manifest.json").is_file()):
        metrics = compare(loaded, Dataset.open(folder), device, baseline=args.baseline,
                          split=args.split, val_fraction=args.val_fraction, seed=args.seed,
                          options=baseline_options(args.baseline_option),
                          tile_mpp=not _mpp_given(args.baseline_option))
        print(f"## {folder.name} ({args.split})\n\n{metrics.pop('table')}\n", flush=True)
        per_source[folder.name] = metrics
    result = {"model": loaded.spec.name, "checkpoint": str(args.model), "data": str(args.data),
              "task": "nuclei", "sources": per_source}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "metrics.json", result)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _mpp_given(pairs: list[str] | None) -> bool:
    """Whether the ``--baseline-option`` pairs set ``mpp`` (else each tile's own is used)."""
    return any(p.split("=", 1)[0].strip() == "mpp" for p in pairs or [])


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen task; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.task is None:
        parser.print_help()
        return 0
    if args.task == "info":
        report = environment_report()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                print(f"{key:16s} {value}")
        return 0
    if args.task == "evaluate":
        return run_evaluate(args)
    if args.task == "tune-nuclei":
        from training.tasks.nuclei.tune import run_cli

        return run_cli(args)
    if args.task == "cv-mri":
        from training.tasks.mri.cv import run_cli as run_cv

        return run_cv(args)
    if args.task == "import-keras":
        from training.import_keras import run_cli as run_import

        return run_import(args)
    return run_task(args)
