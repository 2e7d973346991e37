"""The README's first paragraph and docs/index.md say which models ship trained weights."""

from pathlib import Path

import pytest

from napari_neuroseg.models.registry import DEFAULT_SPECS, ModelRegistry

REPO = Path(__file__).resolve().parents[1]


def _first_paragraph(text: str) -> str:
    body = text.split("\n\n")
    return next(p for p in body if p.strip() and not p.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def shipped():
    registry = ModelRegistry()
    names = {name for name in DEFAULT_SPECS if registry.is_bundled(name)}
    assert names  # the package ships trained weights
    return names


@pytest.mark.parametrize("text", [
    pytest.param(lambda: _first_paragraph((REPO / "README.md").read_text()), id="README"),
    pytest.param(lambda: (REPO / "docs" / "index.md").read_text(), id="docs/index.md"),
])
def test_docs_name_every_shipped_model_and_claim_no_missing_features(text, shipped):
    text = text()
    assert all(f"`{name}`" in text for name in shipped), shipped
    assert "come next" not in text and "No model ships" not in text
