"""napari-neuroseg: neuro-oncology image analysis in napari."""

__version__ = "0.1.0"

__all__ = ["__version__"]
