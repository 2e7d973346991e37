"""What the batch tests share: the tiny slide model they run (a real U-Net, 2 floors,
4 features), and a count of the tiles a model is given."""

import pytest

from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.spec import InputSpec, ModelSpec

SPEC = ModelSpec(
    name="toy-tissue",
    task="semantic_segmentation",
    architecture="unet",
    arch_kwargs={"in_channels": 3, "out_channels": 2, "depth": 2, "base_features": 4},
    input=InputSpec(("R", "G", "B"), {"kind": "range", "scale": 255.0}, (64, 64), halo=8,
                    resolution=1.0, preprocessing=("tissue_mask",)),
    classes=("background", "tissue"),
    colors=("#000000", "#ff00ff"),
    output="probabilities",
    synthetic=True,
)


@pytest.fixture
def model_calls(monkeypatch):
    """``{"tiles": n}``: how many tiles every :class:`ModelRunner` was given in the test."""
    counter = {"tiles": 0}
    original = ModelRunner.__call__

    def counting(self, batch):
        counter["tiles"] += len(batch)
        return original(self, batch)

    monkeypatch.setattr(ModelRunner, "__call__", counting)
    return counter
