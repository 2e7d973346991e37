"""Real sample files for the demo: one patient out of a folder of Kaggle LGG slices, or one
patient folder out of a ``kaggle_3m`` folder (``../shared/data/lgg_mri_kaggle3m``); what a
caption must say about a real slide."""

import atexit
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tifffile

#: The demo's patient: a whole TCGA-LGG stack with a lesion. The shipped FLAIR models were
#: trained on all 40 patients of the Kaggle folder, this one included: its held-out score is
#: the cross-validation's (docs/models.md), and the demo caption says so.
DEMO_PATIENT = "TCGA_DU_8164"
#: Slide file name -> what its captions must say about it. The TCGA slide is the only real
#: whole-slide pyramid in ``../shared/data/wsi``; the GBM tissue model runs on it for its
#: pipeline and level choice (TCGA-CR-7395 is listed among the TCGA-HNSC cases, and its nests
#: of squamous epithelium agree).
SLIDE_NOTES = {
    "tcga-cr-7395-01a-01-ts1.svs": (
        "not a GBM: TCGA-CR-7395 is a head-and-neck squamous cell carcinoma (TCGA-HNSC), "
        "so its regions mean nothing;\nthe scene shows the live pipeline and the pyramid "
        "level it reads"),
}
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


def _mask_pixels(images: list[Path]) -> int:
    masks = [_mask_of(p) for p in images]
    return sum(int(np.count_nonzero(tifffile.imread(m))) for m in masks if m.is_file())


def lgg_patient_folder(folder: Path, patient: str | None = None) -> Path:
    """A folder holding one patient's slices and masks (links into ``folder``).

    A folder of slices from many patients opens as every patient's layers (slow, and the
    demo shows one stack); this picks ``patient``, by default :data:`DEMO_PATIENT` when
    present, else the one whose masks cover the most pixels, and links its files into a
    temporary folder (removed at exit). In a ``kaggle_3m`` folder (one sub-folder per
    patient) the chosen patient's own sub-folder is returned.

    Returns
    -------
    pathlib.Path
        ``folder`` itself when it holds a single patient (or none in this layout).
    """
    subfolders = {p.name: p for p in sorted(folder.iterdir())
                  if p.is_dir() and lgg_patients(p)}
    if subfolders:  # kaggle_3m: one folder per patient study
        named = [name for name in subfolders if name.startswith(patient or DEMO_PATIENT)]
        return subfolders[named[0]] if named else max(
            subfolders.values(),
            key=lambda p: _mask_pixels([f for fs in lgg_patients(p).values() for f in fs]))
    patients = lgg_patients(folder)
    if len(patients) <= 1:
        return folder

    named = [pid for pid in patients if pid.startswith(DEMO_PATIENT)]
    chosen = patient or (named[0] if named else max(
        patients, key=lambda pid: _mask_pixels(patients[pid])))
    target = Path(tempfile.mkdtemp(prefix="neuroseg-demo-")) / chosen
    target.mkdir()
    atexit.register(shutil.rmtree, target.parent, True)
    for image in patients[chosen]:
        for path in (image, _mask_of(image)):
            if path.is_file():
                (target / path.name).symlink_to(path.resolve())
    return target
