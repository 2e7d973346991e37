"""Licences of the training data: recognised from source paths, recorded, shown in the picker."""

from __future__ import annotations

import dataclasses
import json

import pytest

from napari_neuroseg.models.bundled import bundled_weights_folder, weights_provenance
from napari_neuroseg.models.data_licences import (
    KNOWN_DATA_SETS,
    licence_of_sources,
    licence_record,
    licence_text,
)
from napari_neuroseg.models.registry import DEFAULT_SPECS, ModelRegistry

SPEC = DEFAULT_SPECS["nuclei-lenet"]


@pytest.mark.parametrize(
    ("path", "data", "licence"),
    [
        ("../shared/data/lgg_mri_slices/TCGA_CS_4941_19960909_12.tif", "Kaggle LGG",
         "CC BY-NC-SA 4.0"),
        ("/d/kaggle_3m/TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_1.tif", "Kaggle LGG",
         "CC BY-NC-SA 4.0"),
        ("/data/nuclei_monuseg/TCGA-18-5592-01Z-00-DX1.jpg", "MoNuSeg", "CC BY-NC-SA 4.0"),
        ("/data/gbm_tissue_ivygap/images/W3-1-1-M.02.jpg", "IvyGAP", "Allen Institute"),
        ("../shared/data/ihc/train/Lung1.png", "IHC samples", "BSD-3-Clause (scikit-image); "
         "non-commercial (DeepLIIF"),
    ],
)
def test_the_non_commercial_public_sets_are_recognised(path, data, licence):
    (found,) = licence_of_sources([path, None])
    assert found.data.startswith(data) and found.licence.startswith(licence)
    assert found.non_commercial is True


def test_unknown_sources_record_nothing():
    assert licence_of_sources(["/home/me/slides/case1.svs", None]) == []
    assert licence_record([]) is None
    assert licence_text({}) is None and licence_text({"training_data": "x"}) is None


def test_a_mix_of_sets_is_non_commercial_when_any_is():
    sets = licence_of_sources(["/a/nuclei_lgg_tiles/t.png", "/b/nuclei_monuseg/m.jpg"])
    record = licence_record(sets)
    assert record["non_commercial"] is True and len(record["data"]) == 2
    assert "CC BY-NC-SA 4.0 (MoNuSeg" in record["licence"] and "research use" in record["licence"]
    json.dumps(record)
    unknown = licence_record(licence_of_sources(["/a/nuclei_lgg_tiles/t.png"]))
    assert unknown["non_commercial"] is None
    assert licence_text({"training_data_licence": unknown}) == (
        "data licence: none stated, published for research use")


def test_provenance_states_the_licence():
    record = licence_record([KNOWN_DATA_SETS[0]])
    spec = dataclasses.replace(SPEC, extra={**SPEC.extra, "training_data": "lgg-mri (24 MR items)",
                                            "training_data_licence": record})
    assert weights_provenance(spec, "w.safetensors", bundled=True) == (
        "trained on real data (lgg-mri (24 MR items), see docs/models.md); "
        "data licence: CC BY-NC-SA 4.0, non-commercial use only")
    assert weights_provenance(spec, "w.safetensors").endswith(
        "(lgg-mri (24 MR items)); data licence: CC BY-NC-SA 4.0, non-commercial use only")
    plain = dataclasses.replace(spec, extra={"training_data_licence": "CC BY 4.0"})
    assert weights_provenance(plain, "/a/w.safetensors") == (
        "trained weights from w.safetensors (training data not recorded); data licence: CC BY 4.0")


@pytest.mark.parametrize(
    ("name", "licence", "non_commercial"),
    [
        ("mri-flair-unet", "CC BY-NC-SA 4.0", True),  # Kaggle LGG
        ("nuclei-hovernet", "CC BY-NC-SA 4.0 (MoNuSeg 2018 (Kumar et al.)); none stated, "
         "published for research use (TCGA-LGG H&E tiles with corrected nuclear contours); "
         "none stated, published for research use (CoNSeP (Graham et al. 2019))", True),
        ("nuclei-lenet", "none stated, published for research use", None),
    ],
)
def test_every_shipped_sidecar_records_its_training_data_licence(name, licence, non_commercial):
    sidecar = json.loads((bundled_weights_folder() / f"{name}.json").read_text())
    record = sidecar["spec"]["extra"]["training_data_licence"]
    assert record["licence"] == licence and record["non_commercial"] is non_commercial
    line = ModelRegistry().provenance(name)
    assert f"data licence: {licence}" in line
    assert ("non-commercial use only" in line) is bool(non_commercial)
