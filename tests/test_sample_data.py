"""npe2 sample data: generated once into the cache folder, read back lazily."""

import numpy as np
import pytest

from napari_neuroseg import _sample_data


@pytest.fixture(autouse=True)
def _sample_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROSEG_SAMPLE_DIR", str(tmp_path / "samples"))


def _files(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_samples_are_generated_once_and_reused():
    first = [_sample_data.sample_slide(), _sample_data.sample_ct(), _sample_data.sample_mri()]
    written = _files(_sample_data.sample_dir())
    assert written
    again = [_sample_data.sample_slide(), _sample_data.sample_ct(), _sample_data.sample_mri()]
    assert _files(_sample_data.sample_dir()) == written  # nothing rewritten
    assert [len(x) for x in first] == [len(x) for x in again]


@pytest.mark.slow
def test_each_sample_has_the_right_kind_of_data():
    ((slide, skw, skind),) = _sample_data.sample_slide()
    assert skind == "image" and skw["multiscale"] and skw["rgb"] and slide[0].ndim == 3
    ((ct, ckw, ckind),) = _sample_data.sample_ct()
    assert ckind == "image" and ct.ndim == 3 and ckw["metadata"]["neuroseg"]["modality"] == "CT"
    mri = _sample_data.sample_mri()
    kinds = [kind for _, _, kind in mri]
    assert kinds.count("labels") == 1 and kinds.count("image") == 1
    labels = next(data for data, _, kind in mri if kind == "labels")
    assert np.asarray(labels).max() == 1  # the synthetic lesion is there
