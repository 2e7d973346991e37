"""IvyGAP colour-coded GBM region maps -> tissue dataset."""

import shutil

import numpy as np
import pytest
import skimage.io

from napari_neuroseg.dataset import DatasetError, convert_ivygap
from napari_neuroseg.dataset.convert_ivygap import (
    GBM_REGION_CLASSES,
    IVYGAP_ABBREVIATIONS,
    IVYGAP_MPP,
    ivygap_block,
    read_mask_labels,
    region_colours,
    region_mask,
)

# The real table's lines, shuffled: class ids come from the abbreviations, not the order.
TABLE = (
    "255 255 255\tBackground_BC(White_Areas)\n"
    "5 5 5\tNecrosis_CTne_(Black_Areas)\n"
    "33 143 166\tLeading_Edge_LE_(Teal_or_Blue_Areas)\n"
    "210 5 208\tInfiltrating_Tumor_IT_(Purple_Areas)\n"
    "5 208 4\tCellular_Tumor_CT_(Green_Areas)\n"
    "37 209 247\tPerinecrotic_Zone_CTpnz_(Light_Blue_Areas)\n"
    "6 208 170\tPseudopalisading_Cells_Around_Necrosis_CTpan_(Sea_Green_Areas)\n"
    "255 102 0\tMicrovascular_Proliferation_CTmvp_(Red_Areas)\n"
)
COLOURS = {(255, 255, 255): 0, (33, 143, 166): 1, (210, 5, 208): 2, (5, 208, 4): 3,
           (37, 209, 247): 4, (6, 208, 170): 5, (255, 102, 0): 6, (5, 5, 5): 7}


def _ids():
    """A 32x32 map holding every class: 4-row bands of ids 0..7."""
    return np.repeat(np.arange(8, dtype=np.uint8), 4)[:, None].repeat(32, axis=1)


def _paint(ids):
    palette = {v: k for k, v in COLOURS.items()}
    return np.array([palette[i] for i in range(8)], np.uint8)[ids]


def _section(root, stem, ids=None, *, label=True, size=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    (root / "Mask_Labels.txt").write_text(TABLE)
    ids = _ids() if ids is None else ids
    image = np.full((*(size or ids.shape), 3), 150 + len(stem), np.uint8)  # distinct bytes
    skimage.io.imsave(root / "images" / f"{stem}.jpg", image, check_contrast=False)
    if label:
        skimage.io.imsave(root / "labels" / f"{stem}_L.png", _paint(ids), check_contrast=False)


def test_class_ids_follow_the_abbreviations_and_items_carry_patient_block_section(tmp_path):
    _section(tmp_path, "W3-1-1-A.2.01")
    _section(tmp_path, "W30-1-1-B.01")
    data = convert_ivygap(tmp_path, tmp_path / "ds")
    assert data.task == "tissue" and data.modality == "HE"
    assert data.class_map == dict(enumerate(GBM_REGION_CLASSES))
    first, second = data.items
    assert (first.id, first.patient_id, first.slide_id) == ("W3-1-1-A.2.01", "W3", "W3-A")
    assert (second.patient_id, second.slide_id) == ("W30", "W30-B")
    assert first.extra["source"] == "ivygap"
    assert (first.extra["block"], first.extra["section"]) == ("A", "2.01")
    assert second.extra["section"] == "01"
    assert first.extra["class_pixels"] == dict.fromkeys(GBM_REGION_CLASSES, 4 * 32)
    assert first.region["mpp"] == IVYGAP_MPP
    assert np.array_equal(data.read_mask(first), _ids())
    assert data.read_image(first).shape == (32, 32, 3)


def test_the_colour_table_maps_to_the_class_order_the_registry_uses(tmp_path):
    (tmp_path / "t.txt").write_text(TABLE)
    table = read_mask_labels(tmp_path / "t.txt")
    assert table[(33, 143, 166)] == "Leading_Edge_LE_(Teal_or_Blue_Areas)"
    assert region_colours(table) == COLOURS
    assert GBM_REGION_CLASSES[IVYGAP_ABBREVIATIONS["CTpan"]] == \
        "pseudopalisading cells around necrosis"
    with pytest.raises(DatasetError, match=r"'Tumour_' \(1, 2, 3\) names no known IvyGAP class"):
        region_colours({(1, 2, 3): "Tumour_"})


@pytest.mark.parametrize("line", ["33 143\tLeading_Edge_LE", "33 143 166 Leading_Edge_LE",
                                  "33 143 300\tLeading_Edge_LE", "a b c\tLE", "1 2 3\t"])
def test_a_malformed_colour_line_names_the_file_and_line(tmp_path, line):
    path = tmp_path / "Mask_Labels.txt"
    path.write_text("5 5 5\tNecrosis_CTne\n\n" + line + "\n")
    with pytest.raises(DatasetError, match=r"Mask_Labels\.txt, line 3: expected 'R G B"):
        read_mask_labels(path)


def test_a_colour_listed_twice_is_an_error(tmp_path):
    path = tmp_path / "Mask_Labels.txt"
    path.write_text("5 5 5\tNecrosis_CTne\n5 5 5\tCellular_Tumor_CT\n")
    with pytest.raises(DatasetError, match=r"line 2: colour \(5, 5, 5\) is listed twice"):
        read_mask_labels(path)


def test_an_unknown_colour_names_file_colour_count_and_first_pixel(tmp_path):
    rgb = _paint(_ids())
    rgb[6, 9] = rgb[20, 1] = (1, 2, 3)
    with pytest.raises(DatasetError, match=r"x_L\.png: colour \(1, 2, 3\) is not in the colour "
                                           r"table \(2 pixels, first at \(row, col\) \(6, 9\)\)"):
        region_mask(rgb, COLOURS, "x_L.png")
    _section(tmp_path, "W3-1-1-A.2.01")
    skimage.io.imsave(tmp_path / "labels" / "W3-1-1-A.2.01_L.png", rgb, check_contrast=False)
    with pytest.raises(DatasetError, match=r"W3-1-1-A\.2\.01_L\.png: colour \(1, 2, 3\)"):
        convert_ivygap(tmp_path, tmp_path / "ds")


def test_a_missing_or_misfit_region_map_is_an_error_naming_the_file(tmp_path):
    _section(tmp_path, "W3-1-1-A.2.01", label=False)
    with pytest.raises(DatasetError, match=r"W3-1-1-A\.2\.01\.jpg: no region map .*_L\.png"):
        convert_ivygap(tmp_path, tmp_path / "ds")
    _section(tmp_path, "W3-1-1-A.2.01", size=(32, 40))
    with pytest.raises(DatasetError, match=r"_L\.png: region map \(32, 32\) differs from its "
                                           r"image \(32, 40\)"):
        convert_ivygap(tmp_path, tmp_path / "ds")


def test_stems_give_patient_and_block_and_a_bad_stem_is_named(tmp_path):
    assert ivygap_block("W3-1-1-A.2.01") == ("W3", "A")
    assert ivygap_block("W30-1-1-B.01") == ("W30", "B")
    with pytest.raises(DatasetError, match="'slide_7' is not an IvyGAP section name"):
        ivygap_block("slide_7")
    _section(tmp_path, "slide_7")
    with pytest.raises(DatasetError, match="'slide_7'"):
        convert_ivygap(tmp_path, tmp_path / "ds")


@pytest.mark.slow
@pytest.mark.realdata
def test_real_sections_map_every_pixel_and_hold_the_rare_classes(shared_sample, tmp_path):
    source = shared_sample("gbm_tissue_ivygap")
    stems = ("W3-1-1-A.2.01", "W30-1-1-A.01")  # W30-1-1-A.01 is one of 3 sections with IT
    for sub in ("images", "labels"):
        (tmp_path / "src" / sub).mkdir(parents=True)
    shutil.copy(source / "Mask_Labels.txt", tmp_path / "src")
    for stem in stems:
        shutil.copy(source / "images" / f"{stem}.jpg", tmp_path / "src" / "images")
        shutil.copy(source / "labels" / f"{stem}_L.png", tmp_path / "src" / "labels")
    data = convert_ivygap(tmp_path / "src", tmp_path / "ds")
    assert [i.slide_id for i in data.items] == ["W3-A", "W30-A"]
    totals = dict.fromkeys(GBM_REGION_CLASSES, 0)
    for item in data.items:
        assert sum(item.extra["class_pixels"].values()) == 1024 * 1024  # every pixel mapped
        for name, n in item.extra["class_pixels"].items():
            totals[name] += n
    assert totals["leading edge"] > 0 and totals["infiltrating tumour"] > 0
    counts = data.class_pixel_counts()
    assert sum(c.get(2, 0) for c in counts.values()) == totals["infiltrating tumour"]
