"""The recipe's own input: a folder of tiles with ``labels.csv`` (labelled and unlabelled)."""

import json

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.tasks.nuclei_tiles.csv_input import (
    csv_unlabelled_pool,
    is_labels_folder,
    open_tile_data,
    read_labels_csv,
)

SIZE = 32


def _tile(rng, nuclei: bool) -> np.ndarray:
    image = np.empty((SIZE, SIZE, 3), np.float32)
    image[:] = (235, 190, 215)
    image += rng.normal(0, 8, image.shape)
    if nuclei:
        yy, xx = np.mgrid[:SIZE, :SIZE]
        for _ in range(3):
            cy, cx = rng.uniform(5, SIZE - 5, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = (70, 40, 120)
    return np.clip(image, 0, 255).astype(np.uint8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path):
    """24 labelled tiles (NUCLEI / NO_NUCLEUS), 2 rows without a label, 3 tiles not listed."""
    root = tmp_path / "dataset_nuclei_tiles"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = ["filename,label"]
    for n in range(29):
        nuclei = n % 2 == 0
        Image.fromarray(_tile(rng, nuclei)).save(root / f"tile_{n}.png")
        if n < 24:
            lines.append(f"tile_{n}.png,{'NUCLEI' if nuclei else 'NO_NUCLEUS'}")
        elif n < 26:
            lines.append(f"tile_{n},")  # no suffix, no label
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_labels_csv_gives_labelled_items_and_an_unlabelled_pool(folder):
    assert is_labels_folder(folder) and not is_labels_folder(folder / "nothing")
    rows = read_labels_csv(folder / "labels.csv")
    assert len(rows) == 26 and rows[0] == {"file": "tile_0.png", "label": 1, "slide_id": None,
                                           "patient_id": None, "split": None}
    assert rows[25]["file"] == "tile_25.png" and rows[25]["label"] is None
    data = open_tile_data(str(folder), "nuclei-tiles")
    assert data.task == "nuclei-tiles" and len(data.items) == 24
    assert [item.label for item in data.items[:4]] == [1, 0, 1, 0]
    assert data.items[3].id == "tile_3" and data.items[3].shape == (SIZE, SIZE, 3)
    image = data.read_image(data.items[3])
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    pool = csv_unlabelled_pool(data, SIZE)
    assert [pool.tile_id(k) for k in range(len(pool))] == [
        "tile_24.png", "tile_25.png", "tile_26.png", "tile_27.png", "tile_28.png"]
    assert np.array_equal(pool.read_tile(0), np.asarray(Image.open(folder / "tile_24.png")))


@pytest.mark.parametrize(("text", "message"), [
    ("filename,label\ntile_0.png,maybe\n", "row 2: label 'maybe'"),
    ("filename,label\ntile_99.png,NUCLEI\n", "1 listed tile"),
    ("tile_0.png,NUCLEI\n", "add a header"),
    ("filename,label\ntile_0.png,\n", "no row has a label"),
    ("a,b,c\ntile_0.png,1,2\n", "no file column"),
])
def test_bad_labels_csv_names_the_file_and_row(folder, text, message):
    (folder / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        open_tile_data(str(folder), "nuclei-tiles")


def test_training_runs_on_a_labels_csv_folder(folder, tmp_path):
    lines = (folder / "labels.csv").read_text().splitlines()
    lines = ["tile,class,slide_id"] + [f"{line},s{k % 4}" for k, line in enumerate(lines[1:])]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"input_size: {SIZE}\nbatch_size: 8\npseudo_cycles: 1\ncycle_epochs: 1\n"
                      "confidence_threshold: 0.0\n")
    out = tmp_path / "run"
    assert main(["nuclei-tiles", "--data", str(folder), "--out", str(out), "--epochs", "1",
                 "--device", "cpu", "--config", str(config)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pool_tiles"] == 5 and metrics["train_tiles"] + metrics["val_tiles"] == 24
    assert metrics["train_groups"] + metrics["val_groups"] == 4  # split by the slide column
    assert sum(metrics["cycles"][1]["pseudo_labels"].values()) == 5
