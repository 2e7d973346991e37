"""Entry point of ``python -m napari_neuroseg.demo``."""

from napari_neuroseg.demo._main import main

raise SystemExit(main())
