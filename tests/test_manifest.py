"""The npe2 manifest: installed, valid, and every command importable."""

import subprocess
import sys
from pathlib import Path

import pytest
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


#: Where each widget appears besides Plugins > NeuroSeg (napari's contributable menu ids).
EXPECTED_MENUS = {
    "napari/file/io_utilities": {"open_widget"},
    "napari/layers/segment": {"analyse_widget", "mri_widget", "nuclei_widget", "train_widget"},
    "napari/layers/classify": {"ct_widget"},
    "napari/layers/measure": {"mri_widget", "nuclei_widget"},
    "napari/layers/annotate": {"annotate_widget", "export_widget"},
    "napari/layers/filter": {"stain_widget"},
}


def test_menus_are_napari_contributable_and_name_widgets():
    from napari._app_model.constants._menus import is_menu_contributable

    contributions = PluginManifest.from_file(REPO / "napari.yaml").contributions
    widgets = {w.command for w in contributions.widgets}
    menus = {
        menu: {item.command.removeprefix("napari-neuroseg.") for item in items}
        for menu, items in contributions.menus.items()
    }
    assert menus == EXPECTED_MENUS
    assert all(is_menu_contributable(menu) for menu in menus)
    assert {f"napari-neuroseg.{c}" for ids in menus.values() for c in ids} <= widgets


def _submenu_texts(viewer, top: str, sub: str) -> list[str]:
    """Texts of the actions in the window's ``top > sub`` menu (``&`` shortcuts removed)."""
    bar = viewer.window._qt_window.menuBar()
    menu = next(a.menu() for a in bar.actions() if a.text().replace("&", "") == top)
    submenu = next(a.menu() for a in menu.actions() if a.menu() and a.text() == sub)
    return [a.text() for a in submenu.actions()]


@pytest.mark.gui
def test_real_viewer_shows_widgets_in_layers_menus_and_plugins(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    segment = _submenu_texts(viewer, "Layers", "Segment")
    assert {"Analyse slide (NeuroSeg)", "MRI (NeuroSeg)", "Nuclei (NeuroSeg)"} <= set(segment)
    assert "Annotate (NeuroSeg)" in _submenu_texts(viewer, "Layers", "Annotate")
    assert "Nuclei (NeuroSeg)" in _submenu_texts(viewer, "Layers", "Measure")
    assert "CT analysis (NeuroSeg)" in _submenu_texts(viewer, "Layers", "Classify")
    assert "Open image (NeuroSeg)" in _submenu_texts(viewer, "File", "IO Utilities")
    # still under Plugins > NeuroSeg, all nine
    assert len(_submenu_texts(viewer, "Plugins", "NeuroSeg")) == 9


@pytest.mark.gui
def test_layers_segment_menu_docks_the_widget(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    bar = viewer.window._qt_window.menuBar()
    layers = next(a.menu() for a in bar.actions() if a.text().replace("&", "") == "Layers")
    segment = next(a.menu() for a in layers.actions() if a.menu() and a.text() == "Segment")
    action = next(a for a in segment.actions() if a.text() == "Nuclei (NeuroSeg)")
    action.trigger()
    docked = [name for name in viewer.window.dock_widgets]
    assert any("Nuclei" in name for name in docked), docked
