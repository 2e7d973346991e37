"""``python -m napari_neuroseg.demo``: the plugin's widgets run on a slide, a CT and an MRI.

Each image opens in its own viewer with its analysis widget docked and run: nuclei of the
slide region on screen (Nuclei widget), per-slice probabilities and the brain-extraction mask
with its volume (CT widget), FLAIR segmentation and tumour volume (MRI widget). The plugin's
synthetic samples always; with ``--data DIR`` also the real files of ``../shared/data``. With
``--exit`` it saves one screenshot per scene to ``--out``, prints one line of numbers per
screenshot and quits (what ``make demo`` does under Xvfb).
"""

from napari_neuroseg.demo._main import SCENES, main, run_scenes

__all__ = ["SCENES", "main", "run_scenes"]
