"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("NEUROSEG_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample files in ``../shared/data``; skips the test when they are absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path}")
    return path


@pytest.fixture(scope="module")
def tiny_lgg_dataset(tmp_path_factory) -> Path:
    """An ``mri`` dataset of two synthetic Kaggle-LGG patients, 3 slices of 32 px each."""
    from napari_neuroseg.dataset import convert_kaggle_lgg
    from napari_neuroseg.samples.mri import write_lgg_patient

    root = tmp_path_factory.mktemp("lgg")
    for n in range(2):
        write_lgg_patient(root / "kaggle", patient_id=f"TCGA_XX_{n:04d}_20000101", n_slices=3,
                          size=32, seed=n)
    return convert_kaggle_lgg(root / "kaggle", root / "dataset").path


# Runners use torch unless a test asks for another backend: the exported backends
# (tests/models/test_backends.py) export every new network once, which would add minutes
# to a suite that builds hundreds of random-weight models.
os.environ.setdefault("NAPARI_NEUROSEG_BACKEND", "torch")
