"""Real sample files for the demo: one patient out of a folder of Kaggle LGG slices."""

import atexit
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tifffile

#: A patient the shipped mri-flair-unet never saw in training (its validation split), with
#: a lesion: the demo shows a held-out example, not a training one.
HELD_OUT_PATIENT = "TCGA_DU_8164"
_SLICE = re.compile(r"^(?P<patient>.+)_(?P<n>\d+)$")


def lgg_patients(folder: Path) -> dict[str, list[Path]]:
    """Patient id -> its slice images (``<patient>_<n>.tif``, masks left out), by slice number."""
    patients: dict[str, list[tuple[int, Path]]] = {}
    for path in folder.glob("*.tif"):
        match = _SLICE.match(path.stem)
        if match is None or path.stem.endswith("_mask"):
            continue
        patients.setdefault(match["patient"], []).append((int(match["n"]), path))
    return {pid: [p for _, p in sorted(items)] for pid, items in sorted(patients.items())}


def _mask_of(image: Path) -> Path:
    return image.with_name(f"{image.stem}_mask{image.suffix}")


def lgg_patient_folder(folder: Path, patient: str | None = None) -> Path:
    """A folder holding one patient's slices and masks (links into ``folder``).

    A folder of slices from many patients opens as every patient's layers (slow, and the
    demo shows one stack); this picks ``patient``, by default :data:`HELD_OUT_PATIENT` (a
    validation patient of the shipped ``mri-flair-unet``, with a lesion) when present, else the
    one whose masks cover the most pixels, and links its files into a temporary folder
    (removed at exit).

    Returns
    -------
    pathlib.Path
        ``folder`` itself when it holds a single patient (or none in this layout).
    """
    patients = lgg_patients(folder)
    if len(patients) <= 1:
        return folder

    def mask_pixels(pid: str) -> int:
        masks = [_mask_of(p) for p in patients[pid]]
        return sum(int(np.count_nonzero(tifffile.imread(m))) for m in masks if m.is_file())

    held_out = [pid for pid in patients if pid.startswith(HELD_OUT_PATIENT)]
    chosen = patient or (held_out[0] if held_out else max(patients, key=mask_pixels))
    target = Path(tempfile.mkdtemp(prefix="neuroseg-demo-")) / chosen
    target.mkdir()
    atexit.register(shutil.rmtree, target.parent, True)
    for image in patients[chosen]:
        for path in (image, _mask_of(image)):
            if path.is_file():
                (target / path.name).symlink_to(path.resolve())
    return target
