"""npe2 sample data: synthetic data generated on first use, then opened by the readers.

The files are written once into a cache folder (``$NEUROSEG_SAMPLE_DIR``, else
``$XDG_CACHE_HOME/napari-neuroseg/samples``, else ``~/.cache/napari-neuroseg/samples``) and
read back lazily through the same readers a user's files go through.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_neuroseg.io import open_image, to_layer_data
from napari_neuroseg.samples.ct import make_sample_ct
from napari_neuroseg.samples.mri import make_sample_mri
from napari_neuroseg.samples.slide import make_sample_slide


def sample_dir() -> Path:
    """The folder the synthetic samples are written to (created if needed)."""
    env = os.environ.get("NEUROSEG_SAMPLE_DIR")
    if env:
        base = Path(env)
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache) / "napari-neuroseg" / "samples"
    base.mkdir(parents=True, exist_ok=True)
    return base


def sample_slide() -> list[tuple]:
    """A synthetic H&E-like slide pyramid (synthetic data, not tissue)."""
    return to_layer_data(open_image(make_sample_slide(sample_dir() / "slide")))


def sample_ct() -> list[tuple]:
    """A synthetic head-CT phantom series in HU (synthetic data, not a patient)."""
    return to_layer_data(open_image(make_sample_ct(sample_dir() / "ct")))


def sample_mri() -> list[tuple]:
    """A synthetic brain-MRI stack with a FLAIR-abnormality mask (synthetic data)."""
    return to_layer_data(open_image(make_sample_mri(sample_dir() / "mri")))
