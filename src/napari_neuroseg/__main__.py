"""``python -m napari_neuroseg``: the plugin's command line (batch prediction)."""

from __future__ import annotations

import argparse
import sys
import time

from napari_neuroseg import __version__


def build_parser() -> argparse.ArgumentParser:
    """The parser with the ``predict`` sub-command."""
    parser = argparse.ArgumentParser(prog="python -m napari_neuroseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"napari-neuroseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "predict",
        help="run a model over slides, H&E tiles, CT series and MRI stacks",
        description="Run one model over every input; write labels and probabilities "
        "(multiscale OME-Zarr for slides, TIFF for volumes) and OUT/summary.csv. A folder of "
        "H&E tiles (PNG, JPEG, RGB TIFF) gives one result per tile. A failed "
        "input is reported and skipped. Finished tiles are cached in OUT/.neuroseg-cache, so "
        "running the same command again after an interruption resumes.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="slide, H&E tile or folder of tiles, DICOM folder, NIfTI, ...")
    p.add_argument("--mpp", type=_positive_float, default=None, metavar="UM_PER_PX",
                   help="µm per pixel of slides and tiles whose file does not state it "
                   "(without it: assumed 1 µm/px like any slide without one, marked ASSUMED "
                   "in summary.csv); a file's own value is kept")
    p.add_argument("--force-mpp", action="store_true",
                   help="use --mpp even for files that state their own µm/px")
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) or registry name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backend", default="auto",
                   help="inference backend: auto (OpenVINO on the CPU when installed, torch "
                   "on GPUs), torch, channels-last, bf16, compile, onnxruntime, openvino")
    p.add_argument("--scheduler", default=None,
                   help="dask.distributed scheduler address (a task per slide region)")
    p.add_argument("--workers", type=int, default=1, help="local threads without --scheduler")
    p.add_argument("--region-size", type=int, default=2048,
                   help="slide region edge per task, in working pixels")
    p.add_argument("--all-tiles", action="store_true", help="do not skip background tiles")
    p.add_argument("--no-stain-normalization", action="store_true")
    p.add_argument("--threshold", type=float, default=None, help="CT patient decision threshold")
    p.add_argument("--random-weights", action="store_true",
                   help="allow a registry model without weights (outputs are meaningless)")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a positive number of µm per pixel, not {text!r}")
    return value


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (1 when any input failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict" and args.force_mpp and args.mpp is None:
        parser.error("--force-mpp needs --mpp")
    if args.command != "predict":
        parser.print_help()
        return 0
    from napari_neuroseg.batch import predict_inputs
    from napari_neuroseg.models.backends import BackendError, resolve_backend
    from napari_neuroseg.models.device import DeviceError, resolve_device
    from napari_neuroseg.models.source import ModelSource, ModelSourceError

    try:
        resolve_backend(args.backend, resolve_device(args.device))
    except (BackendError, DeviceError, ValueError) as err:
        parser.error(str(err))
    source = ModelSource(args.model, device=args.device, random_weights=args.random_weights,
                         batch_size=args.batch_size, backend=args.backend)
    try:
        rows = predict_inputs(
            args.inputs, source, args.out, scheduler=args.scheduler, workers=args.workers,
            region_size=args.region_size, tissue_only=not args.all_tiles,
            stain=not args.no_stain_normalization, threshold=args.threshold, mpp=args.mpp,
            force_mpp=args.force_mpp, log=_log,
        )
    except ModelSourceError as err:
        parser.error(str(err))
    failed = [r for r in rows if r.get("status", "").startswith("failed")]
    _log(f"{len(rows) - len(failed)} done, {len(failed)} failed; summary in {args.out}/summary.csv")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
