import json

import pytest

from napari_neuroseg.models.spec import InputSpec, ModelSpec, SpecError


def _spec(**changes) -> ModelSpec:
    fields = dict(
        name="toy",
        task="semantic_segmentation",
        architecture="unet",
        arch_kwargs={"depth": 3},
        input=InputSpec(("R", "G", "B"), {"kind": "range", "scale": 255.0}, (64, 64), halo=8,
                        resolution=1.0, preprocessing=("macenko",)),
        classes=("background", "tumour"),
        colors=("#000000", "#ff0000"),
        output="probabilities",
    )
    fields.update(changes)
    return ModelSpec(**fields)


def test_spec_round_trips_through_json():
    spec = _spec(extra={"stride": 128}, synthetic=True)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.n_classes == 2 and again.input.patch_size == (64, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "detection"}, "unknown task"),
        ({"output": "boxes"}, "unknown output"),
        ({"colors": ("#000000",)}, "2 classes but 1 colours"),
    ],
)
def test_inconsistent_specs_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        _spec(**changes)


def test_input_checks():
    with pytest.raises(SpecError, match="twice the halo"):
        InputSpec(("R",), {"kind": "range"}, (32, 32), halo=16)
    with pytest.raises(SpecError, match="at least one channel"):
        InputSpec((), {"kind": "range"}, (32, 32))
    with pytest.raises(SpecError, match="'kind'"):
        InputSpec(("R",), {}, (32, 32))


def test_incomplete_sidecar_spec_is_a_spec_error():
    data = _spec().to_dict()
    del data["classes"]
    with pytest.raises(SpecError, match="incomplete"):
        ModelSpec.from_dict(data)
