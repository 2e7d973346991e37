"""The npe2 manifest: installed, valid, and every command importable."""

import subprocess
import sys
from pathlib import Path

from npe2 import PluginManifest

import napari_neuroseg

REPO = Path(__file__).resolve().parents[1]


def test_manifest_is_found_through_the_entry_point():
    manifest = PluginManifest.from_distribution("napari-neuroseg")
    assert manifest.name == "napari-neuroseg"
    # the manifest napari finds is the top-level napari.yaml, not a copy
    packaged = Path(napari_neuroseg.__file__).parent / "napari.yaml"
    assert packaged.read_text() == (REPO / "napari.yaml").read_text()


def test_every_command_imports():
    manifest = PluginManifest.from_distribution("napari-neuroseg")
    manifest.validate_imports()
    ids = {c.id for c in manifest.contributions.commands}
    assert {"napari-neuroseg.get_reader", "napari-neuroseg.open_widget"} <= ids
    assert {s.key for s in manifest.contributions.sample_data} == {"slide", "ct", "mri"}


def test_npe2_validate_cli_passes():
    npe2 = Path(sys.executable).parent / "npe2"
    result = subprocess.run([str(npe2), "validate", "napari-neuroseg"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
