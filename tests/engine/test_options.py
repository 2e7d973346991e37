"""EngineOptions: built from a spec, validated, frozen; the engine's choices as enums."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_neuroseg.engine import (
    Activation,
    BlendMode,
    EngineError,
    EngineOptions,
    OutputMode,
    predict_region,
)
from napari_neuroseg.models.spec import InputSpec, ModelSpec


def _spec(task: str = "semantic_segmentation", classes: tuple[str, ...] = ("bg", "fg"),
          **extra) -> ModelSpec:
    return ModelSpec(
        name="toy", task=task, architecture="unet", arch_kwargs={},
        input=InputSpec(channels=("R", "G", "B"), normalization={"kind": "range"},
                        patch_size=(96, 96), halo=8),
        classes=classes, colors=tuple("#000000" for _ in classes), output="probabilities",
        threshold=0.3, extra=extra,
    )


def test_dense_model_from_spec():
    options = EngineOptions.from_spec(_spec(), batch_size=4, n_outputs=2)
    assert options.patch_size == (96, 96) and options.halo == 8 and options.overlap == 0
    assert options.mode is OutputMode.DENSE and options.blend is BlendMode.GAUSSIAN
    assert options.activation is Activation.NONE
    assert (options.batch_size, options.n_outputs, options.threshold) == (4, 2, None)
    assert options.preprocess == () and options.tile_filter is None


def test_tile_classifier_stride_and_one_class_threshold_from_spec():
    lenet = EngineOptions.from_spec(_spec("tile_classification", stride=40))
    assert lenet.mode == "tile" and lenet.blend == "constant"
    assert lenet.overlap == 96 - 2 * 8 - 40  # stride wins over extra["overlap"]
    assert lenet.grid((500, 500)).stride == (40, 40)
    assert EngineOptions.from_spec(_spec(overlap=16)).overlap == 16
    one_class = EngineOptions.from_spec(_spec(classes=("lesion",)))
    assert one_class.threshold == 0.3


def test_per_image_options_from_spec():
    def step(patch):
        return patch

    def keep(tile):
        return True

    options = EngineOptions.from_spec(_spec(), preprocess=[step], tile_filter=keep)
    assert options.preprocess == (step,) and options.tile_filter is keep


def test_strings_become_members_equal_to_their_strings():
    options = EngineOptions(32, blend="none", mode="tile", activation="softmax")
    assert options.patch_size == (32, 32)
    assert options.blend is BlendMode.NONE and options.blend == "none"
    assert options.mode is OutputMode.TILE and options.activation is Activation.SOFTMAX
    assert str(BlendMode.LINEAR) == "linear"
    assert BlendMode.values() == ("gaussian", "linear", "constant", "none")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"blend": "max"}, r"unknown blend mode 'max'; use one of \('gaussian'"),
        ({"mode": "pixels"}, r"unknown mode 'pixels'; use one of \('dense', 'tile'\)"),
        ({"activation": "relu"}, r"unknown activation 'relu'.*'softmax'"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"halo": -1}, r"halo \(-1\) and overlap \(0\) must be >= 0"),
        ({"patch_size": (8, 8, 8)}, "patch_size must be an int or"),
    ],
)
def test_bad_values_are_named(changes, message):
    with pytest.raises(EngineError, match=message) as caught:
        EngineOptions(**{"patch_size": 32, **changes})
    assert isinstance(caught.value, ValueError)


def test_frozen_and_replace_validates_again():
    options = EngineOptions(32, halo=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.halo = 2  # type: ignore[misc]
    assert dataclasses.replace(options, blend="linear").blend is BlendMode.LINEAR
    with pytest.raises(EngineError, match="blend mode"):
        dataclasses.replace(options, blend="max")
    assert options == EngineOptions((32, 32), halo=4) and hash(options) == hash(
        EngineOptions((32, 32), halo=4))


def test_enum_members_and_strings_predict_the_same():
    img = np.random.default_rng(0).random((70, 50)).astype(np.float32)
    by_member = EngineOptions(24, halo=2, overlap=6, blend=BlendMode.LINEAR)
    by_string = EngineOptions(24, halo=2, overlap=6, blend="linear")
    a = predict_region(img, lambda x: 2 * x, by_member)
    b = predict_region(img, lambda x: 2 * x, by_string)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
