"""Task names and class maps are defined once (``dataset/tasks.py``); every copy agrees."""

import pytest

from napari_neuroseg.annotate.export import EXPORT_TASKS
from napari_neuroseg.annotate.palette import standard_class_maps
from napari_neuroseg.annotate.trainjob import TASKS as TRAIN_JOB_TASKS
from napari_neuroseg.dataset import TASK_RULES, DatasetWriter
from napari_neuroseg.dataset.tasks import (
    CT_CLASSES,
    EXPORT_MODALITIES,
    FIXED_CLASS_MAPS,
    LGG_TISSUE_CLASSES,
    MRI_CLASSES,
    NUCLEI_CLASSES,
    TASK_NAMES,
    TASKS,
    TILE_CLASSES,
    class_names,
)
from napari_neuroseg.models import lenet
from napari_neuroseg.models.registry import DEFAULT_SPECS
from training.cli import build_parser
from training.tasks import TASKS as TRAINING_TASKS
from training.tasks import load_task

#: The declared model trained on each fixed class map.
MODEL_CLASSES = {
    "lgg-tissue": LGG_TISSUE_CLASSES,
    "mri-flair-unet": MRI_CLASSES,
    "mri-flair-transunet": MRI_CLASSES,
    "ct-metastasis": CT_CLASSES,
    "nuclei-lenet": TILE_CLASSES,
    "nuclei-hovernet": NUCLEI_CLASSES,
}


def test_names_are_unique_and_every_list_of_tasks_is_the_one_list():
    assert len(set(TASK_NAMES)) == len(TASK_NAMES) == len(TASKS) == 6
    assert tuple(TASK_RULES) == TASK_NAMES
    assert tuple(TRAIN_JOB_TASKS) == TASK_NAMES
    assert tuple(TRAINING_TASKS) == TASK_NAMES
    assert dict(EXPORT_TASKS) == dict(EXPORT_MODALITIES)
    assert set(EXPORT_TASKS) == set(TASK_NAMES) - {"stain"}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_is_a_training_sub_command_named_after_it(name):
    module = load_task(name)
    assert module.NAME == module.DATASET_TASK == name
    commands = next(a for a in build_parser()._actions if a.dest == "task").choices
    assert name in commands


@pytest.mark.parametrize("name", sorted(FIXED_CLASS_MAPS))
def test_a_fixed_class_map_is_what_a_dataset_of_the_task_is_written_with(name, tmp_path):
    classes = FIXED_CLASS_MAPS[name]
    assert list(classes) == list(range(len(classes)))
    with DatasetWriter(tmp_path / name, name, "HE", classes) as writer:
        assert writer.class_map == dict(classes)


@pytest.mark.parametrize("model", sorted(MODEL_CLASSES))
def test_declared_models_predict_the_classes_of_their_task(model):
    assert DEFAULT_SPECS[model].classes == class_names(MODEL_CLASSES[model])


def test_lenet_and_the_standard_painting_maps_use_the_same_names():
    assert lenet.CLASSES == class_names(TILE_CLASSES)
    maps = standard_class_maps()
    assert maps["LGG tissue (4 classes)"].names == class_names(LGG_TISSUE_CLASSES)
    assert maps["MRI FLAIR abnormality"].names == class_names(MRI_CLASSES)
    assert maps["nuclei (instances)"].names == class_names(NUCLEI_CLASSES)
    assert maps["CT metastasis"].names == class_names(CT_CLASSES)


def test_class_names_are_in_id_order():
    assert class_names({1: "b", 0: "a"}) == ("a", "b")
    with pytest.raises(KeyError):
        class_names({0: "a", 2: "c"})
