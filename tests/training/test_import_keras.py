"""``python -m training import-keras``: a Keras-layout FC-DenseNet103 file in, a checkpoint out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_neuroseg.models._blocks import parameterised_leaves
from napari_neuroseg.models.checkpoint import load_checkpoint
from napari_neuroseg.models.fcdensenet import FCDenseNet
from training.cli import main

h5py = pytest.importorskip("h5py")


def export_keras_weights(model: nn.Module, path) -> None:
    """Write ``model``'s layers in Keras' ``save_weights`` layout (default layer names)."""
    keras_class = {nn.Conv2d: "conv2d", nn.ConvTranspose2d: "conv2d_transpose",
                   nn.BatchNorm2d: "batch_normalization"}
    counts: dict[str, int] = {}
    with h5py.File(path, "w") as f:
        names = []
        for _, module in parameterised_leaves(model):
            kind = keras_class[type(module)]
            counts[kind] = counts.get(kind, 0) + 1
            name = f"{kind}_{counts[kind]}"
            if kind == "batch_normalization":
                arrays = {"gamma": module.weight, "beta": module.bias,
                          "moving_mean": module.running_mean,
                          "moving_variance": module.running_var}
            else:
                arrays = {"kernel": module.weight.permute(2, 3, 1, 0), "bias": module.bias}
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in arrays])
            for key, tensor in arrays.items():
                group.create_dataset(f"{name}/{key}:0", data=tensor.detach().numpy())
            names.append(name.encode())
        f.attrs["layer_names"] = np.array(names)


def test_import_keras_writes_a_checkpoint_with_the_same_weights(tmp_path, capsys):
    torch.manual_seed(0)
    source = FCDenseNet()
    for module in source.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    export_keras_weights(source, tmp_path / "GBM_WSSM.h5")
    out = tmp_path / "models" / "gbm-wssm.safetensors"
    assert main(["import-keras", str(tmp_path / "GBM_WSSM.h5"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "199 weighted layers" in printed and "9,321,320 trainable" in printed
    assert "9,424,392" in printed and str(out) in printed
    loaded = load_checkpoint(out)
    assert loaded.spec.name == "gbm-tissue-8"
    assert loaded.spec.extra["weights_source"] == "imported from Keras GBM_WSSM.h5"
    expected = source.state_dict()
    for key, value in loaded.model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, expected[key.removeprefix("gbm.")]), key


def test_import_keras_reports_a_file_that_is_not_keras(tmp_path, capsys):
    (tmp_path / "notes.h5").write_text("not hdf5")
    assert main(["import-keras", str(tmp_path / "notes.h5"), str(tmp_path / "x")]) == 1
    assert "notes.h5: not an HDF5 file" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))
