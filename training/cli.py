"""The ``python -m training`` command line.

Each task is a sub-command. ``info`` reports the environment a run would use (versions and the
device that ``--device auto`` picks), which is the first thing to check on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform

from napari_neuroseg import __version__


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
    mri = sub.add_parser(
        "mri",
        help="FLAIR abnormality segmentation of LGG MRI slices (U-Net / TransUNet, seed 001)",
        description="Train mri-flair-unet (or --model mri-flair-transunet via --config) on a "
        "dataset in the export layout (docs/dataset-format.md), with a patient-wise "
        "validation split; writes checkpoints, history, metrics, plots and report.md.",
    )
    _task_arguments(mri)
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


def run_task(args: argparse.Namespace) -> int:
    """Build the task's configuration (defaults, --config, then flags), print it, run it."""
    from training.config import build_config, format_config
    from training.tasks import mri

    overrides = {k: getattr(args, k) for k in
                 ("data", "init", "out", "epochs", "device", "resume", "seed")}
    config = build_config(mri.MRIConfig, args.config, overrides)
    print("effective configuration:\n" + format_config(config), flush=True)
    metrics = mri.run(config)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


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
    return run_task(args)
