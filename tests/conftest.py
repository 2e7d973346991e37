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
