"""The Export widget's Qt-free part: class-map text and a layer's class map."""

from types import SimpleNamespace

import pytest

from napari_neuroseg.widgets._export_job import (
    format_class_map,
    layer_class_map,
    parse_class_text,
)


def test_parse_class_text():
    assert parse_class_text("0: background, 2: tumour") == {0: "background", 2: "tumour"}
    assert parse_class_text("background\ntumour") == {0: "background", 1: "tumour"}
    with pytest.raises(ValueError, match="empty"):
        parse_class_text(" ")


def test_format_class_map_is_the_inverse_of_parse_class_text():
    classes = {0: "background", 2: "tumour", 5: "necrosis"}
    assert parse_class_text(format_class_map(classes)) == classes


def test_layer_class_map_from_metadata_names_or_features():
    assert layer_class_map(None) is None
    named = SimpleNamespace(metadata={"neuroseg": {"classes": ["bg", "CT"]}}, features=None)
    assert layer_class_map(named) == {0: "bg", 1: "CT"}
    featured = SimpleNamespace(metadata={}, features={"index": [0, 3], "class": ["bg", "IT"]})
    assert layer_class_map(featured) == {0: "bg", 3: "IT"}
    assert layer_class_map(SimpleNamespace(metadata={}, features=None)) is None
