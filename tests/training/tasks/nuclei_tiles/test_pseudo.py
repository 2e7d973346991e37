"""Pseudo-labelling thresholds and reporting of the LeNet nuclei-tile recipe (tiny models)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from napari_neuroseg.models.registry import ModelRegistry
from training.tasks.nuclei_tiles.data import TileSource
from training.tasks.nuclei_tiles.pseudo import (
    NoPseudoLabelsWarning,
    effective_threshold,
    max_smoothed_probability,
    pseudo_label,
    report_pseudo_labels,
    select_pseudo_labels,
)
from training.tasks.nuclei_tiles.task import Config

SIZE = 16
NAMES = ["NO_NUCLEUS", "NUCLEI"]


class _MeanModel(nn.Module):
    """p(NUCLEI) = mean of the normalised tile: a constant tile of value v gives v / 255."""

    def forward(self, x):
        p = x.mean((1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log(1 - p), torch.log(p)], dim=1)


def _pool(values):
    tiles = {f"t{k}": np.full((SIZE, SIZE, 3), v, np.uint8) for k, v in enumerate(values)}
    return TileSource(list(tiles), [(SIZE, SIZE)] * len(tiles), tiles.__getitem__, SIZE, "fake")


def test_the_smoothed_ceiling_and_the_effective_threshold():
    assert max_smoothed_probability(0.1, 2) == pytest.approx(0.95)
    assert max_smoothed_probability(0.0, 2) == 1.0
    assert max_smoothed_probability(0.3, 3) == pytest.approx(0.8)
    assert effective_threshold(0.95, 0.1, 2) == pytest.approx(0.9025)
    assert effective_threshold(0.95, 0.1, 2, relative=False) == 0.95
    assert effective_threshold(0.95, 0.0, 2) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="smoothing"):
        effective_threshold(0.9, 1.0, 2)
    with pytest.raises(ValueError, match="threshold"):
        effective_threshold(1.0, 0.1, 2)


def test_a_model_trained_with_the_default_smoothing_passes_the_default_threshold():
    """A tiny network trained to convergence with smoothing 0.1 sits at p ~ 0.95: the raw 0.95
    rejects about half the points it has learnt perfectly, the default relative threshold none."""
    config = Config()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.tensor(np.concatenate([rng.normal(-2, 0.7, (40, 2)), rng.normal(2, 0.7, (40, 2))]),
                     dtype=torch.float32)
    y = torch.tensor([0] * 40 + [1] * 40)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), 0.05)
    loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    for _ in range(200):
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        probs = torch.softmax(model(x), 1).numpy()
    assert (probs.argmax(1) == y.numpy()).all()
    default = effective_threshold(config.confidence_threshold, config.label_smoothing, 2,
                                  config.confidence_relative)
    kept, labels, _ = select_pseudo_labels(probs, default)
    assert len(kept) == 80 and (labels == y.numpy()).all()
    raw, _, _ = select_pseudo_labels(probs, config.confidence_threshold)
    assert len(raw) < 0.75 * len(kept)


def test_default_config_accepts_tiles_at_the_smoothed_ceiling():
    config = Config()
    threshold = effective_threshold(config.confidence_threshold, config.label_smoothing, 2,
                                    config.confidence_relative)
    spec = ModelRegistry().get("nuclei-lenet")
    pool = _pool([240, 15, 200, 128])  # p = 0.941, 0.941 (class 0), 0.784, 0.502
    chosen = pseudo_label(_MeanModel(), pool, spec, torch.device("cpu"), threshold)
    assert chosen.tile_ids == ("t0", "t1") and list(chosen.labels) == [1, 0]
    assert chosen.threshold == pytest.approx(0.9025)
    raw = pseudo_label(_MeanModel(), pool, spec, torch.device("cpu"),
                       config.confidence_threshold)
    assert len(raw.indices) == 0  # the old rule: nothing below the smoothed ceiling passes


def test_each_cycle_reports_its_count_and_warns_when_it_adds_none(capsys):
    spec = ModelRegistry().get("nuclei-lenet")
    pool = _pool([240, 15, 200])
    chosen = pseudo_label(_MeanModel(), pool, spec, torch.device("cpu"), 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = report_pseudo_labels(2, chosen, NAMES)
    assert "cycle 2 adds 2 pseudo-labels of 3 pool tiles" in line
    assert "NO_NUCLEUS: 1, NUCLEI: 1" in line and line in capsys.readouterr().out
    none = pseudo_label(_MeanModel(), pool, spec, torch.device("cpu"), 0.99)
    with pytest.warns(NoPseudoLabelsWarning, match="cycle 3 accepted no pseudo-label"):
        line = report_pseudo_labels(3, none, NAMES)
    assert "adds 0 pseudo-labels" in line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_pseudo_labels(3, none, NAMES, emit=False)  # other DDP ranks stay quiet
    assert capsys.readouterr().out.count("adds 0") == 1
