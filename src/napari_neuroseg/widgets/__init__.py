"""napari widgets (the only modules that import Qt, magicgui or napari's GUI)."""
