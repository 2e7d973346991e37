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


@pytest.fixture(scope="session")
def shared_sample(shared_data):
    """Factory: ``shared_sample(name)`` is ``shared_data / name``; skips the test when that
    sample is absent."""

    def find(name: str) -> Path:
        path = shared_data / name
        if not path.exists():
            pytest.skip(f"{path} not found")
        return path

    return find


def _kaggle_lgg_dataset(root: Path, n_patients: int = 4, n_slices: int = 3,
                        size: int = 32) -> Path:
    from napari_neuroseg.dataset import convert_kaggle_lgg
    from napari_neuroseg.samples.mri import write_lgg_patient

    for n in range(n_patients):
        write_lgg_patient(root / "kaggle", patient_id=f"TCGA_XX_{n:04d}_20000101",
                          n_slices=n_slices, size=size, seed=n)
    return convert_kaggle_lgg(root / "kaggle", root / "dataset").path


@pytest.fixture(scope="session")
def kaggle_lgg_dataset():
    """Factory: ``make(root, n_patients=4, n_slices=3, size=32)`` writes synthetic patients in
    the Kaggle LGG layout under ``root / "kaggle"``, converts them to an ``mri`` dataset in
    ``root / "dataset"`` and returns its path."""
    return _kaggle_lgg_dataset


@pytest.fixture(scope="module")
def tiny_lgg_dataset(tmp_path_factory) -> Path:
    """An ``mri`` dataset of two synthetic Kaggle-LGG patients, 3 slices of 32 px each."""
    return _kaggle_lgg_dataset(tmp_path_factory.mktemp("lgg"), n_patients=2)


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory):
    """A 1024 x 1024 synthetic H&E slide at 0.5 µm/px, three levels of 256 px tiles, opened
    (a ``LazyImage``)."""
    from napari_neuroseg.io import open_image
    from napari_neuroseg.samples.slide import write_synthetic_slide

    path = write_synthetic_slide(tmp_path_factory.mktemp("slide") / "s.tif", size=(1024, 1024),
                                 tile=256, mpp=0.5, layout="pages", compression="zlib",
                                 levels=3)
    return open_image(path)[0]


# Runners use torch unless a test asks for another backend: the exported backends
# (tests/models/test_backends.py) export every new network once, which would add minutes
# to a suite that builds hundreds of random-weight models.
os.environ.setdefault("NAPARI_NEUROSEG_BACKEND", "torch")
