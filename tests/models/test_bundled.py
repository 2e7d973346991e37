"""Bundled weights: the package data folder, the cheap safetensors check, provenance lines."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import napari_neuroseg.models as models_package
from napari_neuroseg.models.bundled import (
    RANDOM_WEIGHTS,
    SYNTHETIC_WEIGHTS,
    BundledWeightsError,
    bundled_weights_folder,
    check_weights_file,
    training_data_text,
    weights_provenance,
)
from napari_neuroseg.models.registry import DEFAULT_SPECS

SPEC = DEFAULT_SPECS["nuclei-lenet"]


def test_the_folder_is_package_data_next_to_the_models_package():
    folder = bundled_weights_folder()
    assert folder.name == "weights"
    assert folder.parent.samefile(next(iter(models_package.__path__)))
    assert (folder / "README.md").is_file()


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(5)}, str(path))
    return path


def test_a_whole_safetensors_file_passes(weights):
    check_weights_file(weights)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-1], "truncated or corrupt"),
        (lambda raw: raw + b"\0", "truncated or corrupt"),
        (lambda raw: raw[:5], "not a safetensors file"),
        (lambda raw: struct.pack("<Q", 10**9) + raw[8:], "header length"),
        (lambda raw: raw[:8] + b"[" + raw[9:], "unreadable safetensors header"),
        (lambda raw: b"PK\x03\x04 a zip, say" * 4, "not a safetensors file"),
    ],
)
def test_damaged_files_are_refused_naming_them(weights, damage, message):
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(BundledWeightsError, match=message) as info:
        check_weights_file(weights)
    assert str(weights) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_weights_file(tmp_path / "none.safetensors")


def test_header_declaring_other_tensors_is_refused(weights):
    raw = weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["b"]["data_offsets"] = [header["b"]["data_offsets"][0], 10**6]
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(BundledWeightsError, match="header declares"):
        check_weights_file(weights)


def test_provenance_lines():
    real = dataclasses.replace(SPEC, extra={**SPEC.extra, "training_data": "tiles (36 items)"})
    assert weights_provenance(real, None) == RANDOM_WEIGHTS
    assert weights_provenance(None, "x.safetensors") == RANDOM_WEIGHTS
    assert weights_provenance(real, "x.safetensors", bundled=True) == (
        "trained on real data (tiles (36 items), see docs/models.md)"
    )
    assert weights_provenance(SPEC, "x.safetensors", bundled=True) == (
        "trained on real data (see docs/models.md)"
    )
    assert weights_provenance(real, "x.safetensors") == "trained on real data (tiles (36 items))"
    assert weights_provenance(SPEC, "/a/x.safetensors") == (
        "trained weights from x.safetensors (training data not recorded)"
    )
    synthetic = dataclasses.replace(real, synthetic=True)
    assert weights_provenance(synthetic, "x.safetensors", bundled=True) == SYNTHETIC_WEIGHTS
    assert SYNTHETIC_WEIGHTS == "trained on SYNTHETIC data - not clinically meaningful"


def test_a_training_note_follows_the_data_and_precedes_the_licence():
    noted = dataclasses.replace(SPEC, extra={**SPEC.extra, "training_data": "ivygap (35 items)",
                                             "training_note": "LGG classes from GBM maps"})
    assert weights_provenance(noted, "x.safetensors", bundled=True) == (
        "trained on real data (ivygap (35 items), see docs/models.md); LGG classes from GBM maps"
    )


def test_training_data_text_accepts_a_dict():
    as_dict = dataclasses.replace(SPEC, extra={"training_data": {"name": "nuclei-lgg"}})
    assert training_data_text(as_dict) == "nuclei-lgg"
    assert training_data_text(SPEC) is None
