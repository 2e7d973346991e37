"""Atomic file and folder writing."""

from __future__ import annotations

import os

import pytest

from napari_neuroseg.io._atomic import atomic_directory, atomic_path, temporary_sibling


def test_temporary_sibling_is_hidden_in_the_same_folder(tmp_path):
    tmp = temporary_sibling(tmp_path / "mask.tif")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".mask.tif.") and tmp.name.endswith(".tmp")
    assert not tmp.exists()
    assert temporary_sibling(tmp_path / "mask.tif") != tmp


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # untouched until the block ends
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_needs_an_existing_folder(tmp_path):
    with (
        pytest.raises(FileNotFoundError, match="does not exist"),
        atomic_path(tmp_path / "missing" / "x.tif"),
    ):
        pass


def test_atomic_directory_creates_and_replaces(tmp_path):
    target = tmp_path / "store"
    with atomic_directory(target) as tmp:
        assert tmp.is_dir() and not target.exists()
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == ["b.txt"]
    assert os.listdir(tmp_path) == ["store"]


def test_atomic_directory_keeps_the_old_folder_on_error(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "a.txt").write_text("1")
    with pytest.raises(ValueError, match="boom"), atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("2")
        raise ValueError("boom")
    assert sorted(os.listdir(target)) == ["a.txt"]
    assert os.listdir(tmp_path) == ["store"]
