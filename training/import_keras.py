"""Import the GBM_WSSM authors' Keras weights: ``python -m training import-keras SRC OUT``.

``SRC`` is the authors' ``GBM_WSSM.h5`` (FC-DenseNet103, Keras 2.2 / TensorFlow 1.13), saved
with ``model.save_weights`` or ``model.save``; it is read with h5py, never unpickled. ``OUT``
is the checkpoint to write (``OUT.safetensors`` and its ``OUT.json`` sidecar, atomically) with
the ``gbm-tissue-8`` spec, whose ``extra`` records the file's name and SHA-256
(:func:`napari_neuroseg.models.keras_import.import_keras_checkpoint`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "import the authors' Keras GBM_WSSM.h5 (FC-DenseNet103) as a gbm-tissue-8 checkpoint"
DESCRIPTION = ("Convert the GBM_WSSM authors' Keras weights (GBM_WSSM.h5, read with h5py, never "
               "unpickled) into OUT.safetensors and its OUT.json sidecar, written atomically, "
               "with the gbm-tissue-8 spec; the sidecar records the file's name and SHA-256.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``import-keras`` arguments."""
    parser.add_argument("source", help="Keras HDF5 file (GBM_WSSM.h5)")
    parser.add_argument("out", help="checkpoint to write (OUT.safetensors + OUT.json)")


def run_cli(args: argparse.Namespace) -> int:
    """Convert, print what was loaded; a file that does not fit is reported, exit code 1."""
    from napari_neuroseg.models.keras_import import import_keras_checkpoint

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    try:
        report = import_keras_checkpoint(args.source, args.out)
    except (ImportError, OSError, ValueError) as err:
        print(f"import-keras: error: {err}", file=sys.stderr)
        return 1
    print(report.summary(), flush=True)
    return 0
