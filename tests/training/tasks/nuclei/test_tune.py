"""Post-processing and baseline grids for a nuclei checkpoint, chosen on one side of the split."""

import json

import numpy as np
import pytest
import torch

from napari_neuroseg.analysis.nuclei_classical import ClassicalNucleiOptions
from napari_neuroseg.dataset import Dataset
from napari_neuroseg.models.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    read_sidecar,
)
from training.cli import main
from training.tasks.nuclei.compare import baseline_scores, evaluation_indices
from training.tasks.nuclei.data import NucleiTiles
from training.tasks.nuclei.scoring import instance_scores, tile_loader
from training.tasks.nuclei.tune import (
    BASELINE_GRID,
    DEFAULT_GRID,
    load_grid,
    tune,
    write_checkpoint,
)

#: For the untrained model below: no nuclei at all, then some (PQ > 0), then none again.
GRID = [{"np_threshold": 0.5, "marker_threshold": 0.3, "min_size": 4, "ksize": 5},
        {"np_threshold": 0.0, "marker_threshold": 0.6, "min_size": 4, "ksize": 5},
        {"np_threshold": 0.7, "marker_threshold": 0.6, "min_size": 4, "ksize": 5}]


@pytest.fixture(scope="module")
def dataset(make_nuclei_dataset):
    """Six 64 px synthetic tiles of three patients (two tiles each)."""
    return make_nuclei_dataset(64, 25, (4, 7))


@pytest.fixture(scope="module")
def checkpoint(make_tiny_hovernet):
    """An untrained, tiny nuclei-hovernet checkpoint (the task's default post-processing)."""
    return make_tiny_hovernet()


def test_default_grids_are_the_ones_the_shipped_options_came_from():
    assert len({tuple(sorted(o.items())) for o in DEFAULT_GRID}) == len(DEFAULT_GRID) == 17
    assert {"np_threshold": 0.6, "marker_threshold": 0.5, "min_size": 10,
            "ksize": 15} in DEFAULT_GRID
    assert [{k: o[k] for k in DEFAULT_GRID[0]} for o in load_grid("default")] == \
        list(DEFAULT_GRID)
    assert {(o["nucleus_radius_um"], o["sigma"]) for o in BASELINE_GRID} == {
        (r, s) for r in (3.0, 3.5, 4.0, 5.0, 6.0, 7.0) for s in (1.0, 2.0)}


def test_load_grid_fills_defaults_and_rejects_bad_options(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([{"ksize": 9}]))
    (entry,) = load_grid(str(path))
    assert entry["ksize"] == 9 and set(entry) == {"np_threshold", "marker_threshold",
                                                   "min_size", "ksize", "marker_radius",
                                                   "keep_unmarked"}
    assert (entry["marker_radius"], entry["keep_unmarked"]) == (2, False)  # the paper's
    with pytest.raises(ValueError, match="unknown"):
        load_grid([{"threshold": 0.5}])
    with pytest.raises(ValueError, match="ksize"):
        load_grid([{"ksize": 8}])
    with pytest.raises(ValueError, match="np_threshold"):
        load_grid([{"np_threshold": 1.5}])


def test_tune_scores_like_the_task_and_picks_the_max_pq_row(dataset, checkpoint):
    data = Dataset.open(dataset)
    loaded = load_checkpoint(checkpoint)
    result = tune(loaded, data, torch.device("cpu"), grid=GRID, batch_size=2)
    indices, patients = evaluation_indices(data, "train")
    assert result["patients"] == list(patients) and len(result["tiles"]) == len(indices)
    pqs = [row["pq"] for row in result["grid"]]
    assert pqs[0] == 0.0 and pqs[1] > 0.0  # the grid is not flat: the choice is meaningful
    best = result["grid"][int(np.argmax(pqs))]
    assert {k: result["best"][k] for k in GRID[0]} == {k: best[k] for k in GRID[0]} == GRID[1]
    # each row is what the training task's own scoring gives with those options
    tiles = NucleiTiles(data, indices, loaded.spec)
    for post, row in zip(GRID, result["grid"], strict=True):
        expected = instance_scores(loaded.model, tile_loader(tiles, 2), torch.device("cpu"), post)
        for key in ("dice", "aji", "pq", "nuclei_pred"):
            assert row[key] == pytest.approx(expected[key], abs=1e-6)
    rows = result["baseline_grid"]
    assert len(rows) == len(BASELINE_GRID)
    assert result["baseline_best"] == BASELINE_GRID[int(np.argmax([r["pq"] for r in rows]))]
    direct = baseline_scores(data, indices, ClassicalNucleiOptions(**BASELINE_GRID[3]))
    assert rows[3]["pq"] == pytest.approx(direct["pq"])
    assert "**best**" in result["tables"] and "nucleus_radius_um=4.0" in result["tables"]


def test_cli_writes_json_and_a_checkpoint_with_the_best_options(dataset, checkpoint, tmp_path,
                                                                capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID))
    out, target = tmp_path / "run", tmp_path / "models" / "tuned"
    assert main(["tune-nuclei", "--model", str(checkpoint), "--data", str(dataset),
                 "--grid", str(grid), "--no-baseline", "--device", "cpu", "--out", str(out),
                 "--write", str(target)]) == 0
    assert "| np_threshold=0.0 marker_threshold=0.6" in capsys.readouterr().out
    result = json.loads((out / "tune-nuclei.json").read_text())
    best = max(result["grid"], key=lambda row: row["pq"])
    assert {k: result["best"][k] for k in GRID[0]} == {k: best[k] for k in GRID[0]}
    assert result["baseline_grid"] == []
    tuned = load_checkpoint(target)  # loads: the weights still match the sidecar's hash
    assert tuned.spec.extra["postprocess"] == result["best"]
    selection = tuned.spec.extra["postprocess_selection"]
    assert selection["split"] == "train" and selection["settings"] == len(GRID)
    assert selection["scores"]["pq"] == pytest.approx(best["pq"])
    (w_in, s_in), (w_out, s_out) = checkpoint_paths(checkpoint), checkpoint_paths(target)
    assert w_out.read_bytes() == w_in.read_bytes()
    before, after = read_sidecar(s_in), read_sidecar(s_out)
    assert after["weights_sha256"] == before["weights_sha256"]
    assert {k: v for k, v in after["spec"].items() if k != "extra"} == {
        k: v for k, v in before["spec"].items() if k != "extra"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["tuned.json",
                                                               "tuned.safetensors"]


def test_write_checkpoint_refuses_weights_that_do_not_match(checkpoint, tmp_path):
    weights, sidecar = checkpoint_paths(checkpoint)
    bad = tmp_path / "bad"
    (tmp_path / "bad.json").write_text(sidecar.read_text())
    (tmp_path / "bad.safetensors").write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(CheckpointError, match="does not match"):
        write_checkpoint(bad, tmp_path / "out" / "x", GRID[0], {})
    assert not (tmp_path / "out" / "x.json").exists()
