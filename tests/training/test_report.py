"""Plots are written as PNG files and report.md links them and holds the numbers."""

from __future__ import annotations

import numpy as np

from training.report import (
    plot_confusion_matrix,
    plot_history,
    plot_per_class_recall,
    plot_probability_histograms,
    write_report,
)
from training.runfolder import RunFolder

PNG = b"\x89PNG"


def test_plots_and_report(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    history = {"epoch": [0, 1, 2], "train_loss": [1.0, 0.7, 0.5], "val_loss": [0.9, 0.6, 0.65],
               "dice": [0.2, 0.5, 0.55], "lr": [[0.1], [0.1], [0.05]], "seconds": [1, 1, 1]}
    names = ["bg", "IT", "LE"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=300)
    labels = rng.integers(0, 3, 300)
    plots = [
        plot_history(history, run.plots / "curves.png"),
        plot_confusion_matrix([[50, 2, 1], [3, 5, 0], [1, 0, 4]], names,
                              run.plots / "confusion.png"),
        plot_per_class_recall({"bg": 0.94, "IT": 0.625, "LE": None},
                              run.plots / "recall.png"),
        plot_probability_histograms(probs, labels, names, [1, 2], run.plots / "rare.png"),
    ]
    for plot in plots:
        assert plot.read_bytes()[:4] == PNG and plot.stat().st_size > 1000
    metrics = {"mean_dice": 0.5512, "recall": {"bg": 0.94, "IT": 0.625, "LE": None},
               "confusion_matrix": [[1]]}
    report = write_report(run, title="tissue run", metrics=metrics, history=history,
                          plots=plots, notes=["Synthetic data."])
    text = report.read_text()
    assert text.startswith("# tissue run")
    assert "| mean_dice | 0.5512 |" in text and "| recall/IT | 0.6250 |" in text
    assert "| recall/LE | n/a |" in text
    assert "Lowest validation loss 0.6000 at epoch 1." in text
    assert "![curves](plots/curves.png)" in text and "Synthetic data." in text
    assert "confusion_matrix" not in text  # lists are plotted, not tabulated
    assert not list(run.plots.glob(".*"))  # no temporaries left


def test_histogram_defaults_to_rarest_class(tmp_path):
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    path = plot_probability_histograms(probs, [0, 0, 1], ["a", "b"], [], tmp_path / "h.png")
    assert path.read_bytes()[:4] == PNG
