"""Keras HDF5 import: files written in Keras' layout, checked against a NumPy reference."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from napari_neuroseg.models.checkpoint import load_checkpoint, read_sidecar
from napari_neuroseg.models.fcdensenet import FCDenseNet
from napari_neuroseg.models.keras_import import (
    gbm_wssm_spec,
    import_keras_checkpoint,
    load_keras_weights,
)

h5py = pytest.importorskip("h5py")

SMALL = {"in_channels": 3, "n_classes": 8, "first_filters": 8, "growth_rate": 4,
         "down_blocks": (2, 3), "bottleneck_layers": 2}
FC103 = {"in_channels": 3, "n_classes": 8, "first_filters": 48, "growth_rate": 16,
         "down_blocks": (4, 5, 7, 10, 12), "bottleneck_layers": 15}
SNAKE = {"Conv2D": "conv2d", "Conv2DTranspose": "conv2d_transpose", "Activation": "activation",
         "BatchNormalization": "batch_normalization", "Dropout": "dropout",
         "Concatenate": "concatenate", "Reshape": "reshape"}


def keras_layers(arch: dict, seed: int = 0) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """``(class name, layer name, weights)`` in the order the authors' code creates them."""
    rng, count, layers = np.random.default_rng(seed), Counter(), []
    growth = arch["growth_rate"]

    def add(cls, **weights):
        count[cls] += 1
        layers.append((cls, f"{SNAKE[cls]}_{count[cls]}",
                       {k: v.astype(np.float32) for k, v in weights.items()}))

    def conv(cls, k, cin, cout):
        add(cls, kernel=rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout)),
            bias=rng.normal(0, 0.1, cout))

    def relu_bn(c):
        add("Activation")
        add("BatchNormalization", gamma=rng.uniform(0.5, 1.5, c), beta=rng.normal(0, 0.1, c),
            moving_mean=rng.normal(0, 0.2, c), moving_variance=rng.uniform(0.5, 2, c))

    def dense_block(c, n):
        for _ in range(n):
            relu_bn(c)
            conv("Conv2D", 3, c, growth)
            add("Dropout")
            add("Concatenate")
            c += growth
        return c

    conv("Conv2D", 3, arch["in_channels"], arch["first_filters"])
    c, skips = arch["first_filters"], []
    for n in arch["down_blocks"]:
        c = dense_block(c, n)
        skips.append(c)
        relu_bn(c)
        conv("Conv2D", 1, c, c)
        add("Dropout")
    dense_block(c, arch["bottleneck_layers"])
    added = arch["bottleneck_layers"] * growth
    for n, skip in zip(reversed(arch["down_blocks"]), reversed(skips), strict=True):
        add("Concatenate")
        conv("Conv2DTranspose", 3, added, added)  # kernel (kh, kw, out, in): out == in here
        add("Concatenate")
        c, added = dense_block(added + skip, n), n * growth
    conv("Conv2D", 1, c, arch["n_classes"])
    add("Reshape")
    add("Activation")
    return layers


def write_keras_h5(path, layers, *, full_model=False, chunked=False) -> None:
    """Write ``layers`` as Keras 2 does: ``save_weights`` or (``full_model``) ``save``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        names = np.array([name.encode() for _, name, _ in layers])
        if chunked:  # Keras' split of attributes too long for the HDF5 header
            root.attrs["layer_names0"], root.attrs["layer_names1"] = names[:5], names[5:]
        else:
            root.attrs["layer_names"] = names
        root.attrs["keras_version"], root.attrs["backend"] = b"2.2.4", b"tensorflow"
        for _, name, weights in layers:
            group = root.create_group(name)
            weight_names = [f"{name}/{key}:0" for key in weights]
            group.attrs["weight_names"] = np.array([w.encode() for w in weight_names])
            for weight_name, array in zip(weight_names, weights.values(), strict=True):
                group.create_dataset(weight_name, data=array)
        if full_model:
            config = {"class_name": "Model", "config": {"layers": [
                {"class_name": cls, "config": {"name": name}} for cls, name, _ in layers]}}
            f.attrs["model_config"] = json.dumps(config).encode()


# --- NumPy reference of the Keras network (channels last, float64) ---------------------------

def _conv_same(x, kernel, bias, stride=1):
    k = kernel.shape[0]
    if k == 1:
        return x[::stride, ::stride] @ kernel[0, 0] + bias
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    return np.einsum("hwcij,ijco->hwo", windows, kernel) + bias


def _transposed_same(x, kernel, bias):
    """TF ``conv2d_transpose``, stride 2, 'same': out[2i + k] += x[i] w[k], first 2H rows."""
    h, w, _ = x.shape
    out = np.zeros((2 * h + 1, 2 * w + 1, kernel.shape[2]))
    for ki in range(3):
        for kj in range(3):
            out[ki:ki + 2 * h:2, kj:kj + 2 * w:2] += np.einsum("hwi,oi->hwo", x, kernel[ki, kj])
    return out[: 2 * h, : 2 * w] + bias


def reference_forward(x, layers, arch):
    """The authors' network in NumPy, consuming the weighted layers in order."""
    weighted = iter(w for _, _, w in layers if w)

    def relu_bn(t):
        p = next(weighted)
        t = np.maximum(t, 0)
        return (t - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] \
            + p["beta"]

    def conv(t, stride=1):
        p = next(weighted)
        return _conv_same(t, p["kernel"].astype(np.float64), p["bias"], stride)

    def dense_block(t, n):
        added = []
        for _ in range(n):
            new = conv(relu_bn(t))
            t = np.concatenate([t, new], axis=-1)
            added.append(new)
        return t, np.concatenate(added, axis=-1)

    t, skips = conv(x), []
    for n in arch["down_blocks"]:
        t, _ = dense_block(t, n)
        skips.append(t)
        t = conv(relu_bn(t), stride=2)
    _, added = dense_block(t, arch["bottleneck_layers"])
    for n, skip in zip(reversed(arch["down_blocks"]), reversed(skips), strict=True):
        p = next(weighted)
        up = _transposed_same(added, p["kernel"].astype(np.float64), p["bias"])
        t, added = dense_block(np.concatenate([up, skip], axis=-1), n)
    return conv(t)


def _torch_output(model, x_hwc):
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x_hwc.transpose(2, 0, 1)[None]).float())
    return out[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("layout", ["save_weights", "save", "chunked"])
def test_small_network_computes_what_the_keras_layers_compute(tmp_path, layout):
    layers = keras_layers(SMALL)
    path = tmp_path / "small.h5"
    write_keras_h5(path, layers, full_model=layout == "save", chunked=layout == "chunked")
    model = FCDenseNet(**SMALL)
    report = load_keras_weights(model, path)
    x = np.random.default_rng(1).uniform(0, 1, (16, 16, 3))
    expected = reference_forward(x, layers, SMALL)
    np.testing.assert_allclose(_torch_output(model, x), expected, atol=1e-4, rtol=1e-4)
    assert report.keras_version == "2.2.4"
    assert report.layers[0] == ("conv2d_1", "first")
    assert report.layers[-1] == (f"conv2d_{report.kinds['Conv2D']}", "head")


def test_fcdensenet103_file_fills_every_parameter(tmp_path):
    layers = keras_layers(FC103)
    path = tmp_path / "GBM_WSSM.h5"
    write_keras_h5(path, layers)
    model = FCDenseNet(**FC103)
    report = load_keras_weights(model, path)
    assert (report.n_parameters, report.n_values) == (9_321_320, 9_424_392)
    assert report.kinds == {"Conv2D": 98, "BatchNormalization": 96, "Conv2DTranspose": 5}
    state = model.state_dict()
    by_name = {name: w for _, name, w in layers}
    for keras_name, torch_name in report.layers:
        weights = by_name[keras_name]
        if "kernel" in weights:
            assert torch.equal(state[f"{torch_name}.weight"],
                               torch.from_numpy(weights["kernel"].transpose(3, 2, 0, 1)))
            assert torch.equal(state[f"{torch_name}.bias"], torch.from_numpy(weights["bias"]))
        else:
            assert torch.equal(state[f"{torch_name}.running_var"],
                               torch.from_numpy(weights["moving_variance"]))
            assert torch.equal(state[f"{torch_name}.weight"], torch.from_numpy(weights["gamma"]))


def _expect_error(path, arch, *fragments):
    model = FCDenseNet(**arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_keras_weights(model, path)
    for fragment in (str(path), *fragments):
        assert fragment in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # unchanged


def test_a_missing_layer_names_the_first_layer_out_of_place(tmp_path):
    layers = keras_layers(SMALL)
    del layers[[n for _, n, _ in layers].index("batch_normalization_3")]
    write_keras_h5(tmp_path / "m.h5", layers)
    _expect_error(tmp_path / "m.h5", SMALL, "'conv2d_4'", "'down.0.transition.1'",
                  "is a Conv2D, expected a BatchNormalization",
                  "the file has 31 weighted layers, the model 32")


def test_an_extra_layer_at_the_end_is_named(tmp_path):
    layers = keras_layers(SMALL)
    layers.append(("Conv2D", "conv2d_extra", dict(layers[-3][2])))
    write_keras_h5(tmp_path / "m.h5", layers)
    _expect_error(tmp_path / "m.h5", SMALL, "'conv2d_extra'", "has no PyTorch layer")


def test_a_missing_last_layer_names_the_pytorch_layer(tmp_path):
    layers = [layer for layer in keras_layers(SMALL) if layer[1] != "conv2d_16"]  # the head
    write_keras_h5(tmp_path / "m.h5", layers)
    _expect_error(tmp_path / "m.h5", SMALL, "'head'", "has no Keras layer")


def test_a_wrong_shape_names_both_layers_and_shapes(tmp_path):
    write_keras_h5(tmp_path / "m.h5", keras_layers({**SMALL, "growth_rate": 5}))
    _expect_error(tmp_path / "m.h5", SMALL, "'conv2d_2'", "'down.0.block.layers.0.2'",
                  "kernel has shape (3, 3, 8, 5), expected (3, 3, 8, 4)")


def test_a_renamed_transposed_convolution_is_a_wrong_kind(tmp_path):
    layers = [(cls, "conv2d_99" if name == "conv2d_transpose_1" else name, w)
              for cls, name, w in keras_layers(SMALL)]
    write_keras_h5(tmp_path / "m.h5", layers)
    _expect_error(tmp_path / "m.h5", SMALL, "'conv2d_99'", "'up.0.transition.conv'",
                  "expected a Conv2DTranspose")


def test_files_that_are_not_keras_weights_name_the_file(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    _expect_error(text, SMALL, "not an HDF5 file")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    _expect_error(tmp_path / "other.h5", SMALL, "no 'layer_names'")
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        load_keras_weights(FCDenseNet(**SMALL), tmp_path / "missing.h5")


def test_the_checkpoint_loads_through_the_registry_and_computes_the_same(tmp_path):
    layers = keras_layers(SMALL)
    write_keras_h5(tmp_path / "small.h5", layers, full_model=True)
    arch = {"in_channels": 3, "n_source_classes": 8, "first_filters": 8, "growth_rate": 4,
            "down_blocks": [2, 3], "bottleneck_layers": 2, "dropout": 0.2,
            "mapping_head": False}
    spec = dataclasses.replace(gbm_wssm_spec(), arch_kwargs=arch)
    report = import_keras_checkpoint(tmp_path / "small.h5", tmp_path / "gbm.safetensors",
                                     spec=spec)
    assert report.checkpoint == tmp_path / "gbm.safetensors"
    loaded = load_checkpoint(report.checkpoint)
    assert loaded.spec.name == "gbm-tissue-8"
    assert loaded.spec.extra["weights_source"] == "imported from Keras small.h5"
    assert loaded.spec.extra["sha256"] == report.sha256
    assert all(k.startswith("gbm.") for k in loaded.model.state_dict())
    x = np.random.default_rng(2).uniform(0, 1, (16, 16, 3))
    np.testing.assert_allclose(_torch_output(loaded.model, x),
                               reference_forward(x, layers, SMALL), atol=1e-4, rtol=1e-4)
    assert read_sidecar(report.checkpoint)["n_parameters"] == report.n_parameters


def test_the_default_spec_is_the_fcdensenet103():
    spec = gbm_wssm_spec()
    assert spec.name == "gbm-tissue-8"
    assert spec.arch_kwargs["down_blocks"] == [4, 5, 7, 10, 12]
    assert (spec.arch_kwargs["first_filters"], spec.arch_kwargs["growth_rate"],
            spec.arch_kwargs["bottleneck_layers"], spec.arch_kwargs["mapping_head"]) == (
        48, 16, 15, False)


def test_without_h5py_the_error_says_what_to_install(tmp_path, monkeypatch):
    write_keras_h5(tmp_path / "small.h5", keras_layers(SMALL))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        load_keras_weights(FCDenseNet(**SMALL), tmp_path / "small.h5")
