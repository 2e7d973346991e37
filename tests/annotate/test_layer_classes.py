"""What a layer's labels mean, from the metadata the plugin writes on its layers."""

import pytest

from napari_neuroseg.annotate.layer_classes import (
    NUCLEI_MAP,
    class_map_of_metadata,
    export_task_of_metadata,
    model_spec,
)
from napari_neuroseg.annotate.palette import STANDARD_CLASS_MAPS, ClassMap
from napari_neuroseg.models.registry import ModelRegistry

LGG = STANDARD_CLASS_MAPS["LGG tissue (4 classes)"]


def test_model_spec_of_known_unknown_and_missing_models():
    assert model_spec("nuclei-hovernet").task == "instance_segmentation"
    assert model_spec("my-own-checkpoint") is None
    assert model_spec(None) is None and model_spec("") is None


@pytest.mark.parametrize("meta", [
    {"model": "nuclei-hovernet", "result_of": "Nuclei"},
    {"model": None, "result_of": "Nuclei"},  # a Nuclei result without a model name
    {"model": "nuclei-lenet", "result_of": "Nuclei"},  # not an instance model, still nuclei
    {"model": "my-own-checkpoint", "result_of": "Nuclei"},
    {"model": "nuclei-hovernet"},  # an instance model's labels, whoever made them
])
def test_a_nuclei_result_is_nuclei_instances(meta):
    found = class_map_of_metadata(meta)
    assert found.kind == "instance" and found.names == NUCLEI_MAP.names
    assert export_task_of_metadata(meta) == "nuclei"


def test_a_nuclei_result_stays_nuclei_whatever_palette_was_put_on_it():
    meta = {"model": "nuclei-hovernet", "result_of": "Nuclei", "class_map": LGG.to_dict(),
            "classes": list(LGG.names)}
    assert class_map_of_metadata(meta).kind == "instance"
    assert export_task_of_metadata(meta) == "nuclei"


@pytest.mark.parametrize(("model", "task"), [("gbm-tissue-8", "tissue"),
                                             ("lgg-tissue", "tissue"),
                                             ("mri-flair-unet", "mri")])
def test_a_semantic_result_has_its_models_classes(model, task):
    meta = {"model": model, "result_of": "Analyse slide"}
    spec = ModelRegistry().get(model)
    found = class_map_of_metadata(meta)
    assert found == ClassMap.from_spec(spec) and found.kind == "semantic"
    assert export_task_of_metadata(meta) == task


def test_other_model_tasks_export_by_their_task_and_have_no_class_map():
    assert export_task_of_metadata({"model": "ct-metastasis"}) == "ct"
    assert export_task_of_metadata({"model": "nuclei-lenet"}) == "nuclei-tiles"
    assert class_map_of_metadata({"model": "ct-metastasis"}) is None


def test_a_label_stores_layer_has_the_stores_class_map():
    meta = {"label_store": "/tmp/store", "class_map": LGG.to_dict()}
    assert class_map_of_metadata(meta) == LGG
    assert export_task_of_metadata(meta) is None  # the widget's own choice (tissue)
    nuclei = {"label_store": "/tmp/store", "class_map": NUCLEI_MAP.to_dict()}
    assert class_map_of_metadata(nuclei) == NUCLEI_MAP
    assert export_task_of_metadata(nuclei) == "nuclei"
    assert class_map_of_metadata({"label_store": "/tmp/s", "class_map": {"bad": 1}}) is None


@pytest.mark.parametrize("meta", [{}, {"model": "my-own-checkpoint"},
                                  {"image": "slide", "modality": "slide"},
                                  {"class_map": LGG.to_dict()}])  # a layer painted by hand
def test_plain_layers_say_nothing(meta):
    assert class_map_of_metadata(meta) is None
    assert export_task_of_metadata(meta) is None


def test_a_layer_painted_with_the_nuclei_palette_exports_as_nuclei():
    assert export_task_of_metadata({"class_map": NUCLEI_MAP.to_dict()}) == "nuclei"
