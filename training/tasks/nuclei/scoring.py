"""Scoring nuclei instances: a HoVer-Net's outputs through the plugin's watershed
post-processing (:func:`predict_instances`), then Dice, AJI, DQ, SQ and PQ per tile, averaged
(:func:`mean_instance_scores`); models and baselines are scored alike. Also the example figure
of a run's report (:func:`plot_example`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from napari_neuroseg.models.hovernet_post import hovernet_instances
from training.metrics import nuclei_metrics
from training.tasks.nuclei.data import NucleiTiles

METRIC_KEYS = ("dice", "aji", "dq", "sq", "pq")


def predict_instances(model: nn.Module, x: torch.Tensor, post: dict[str, Any]
                      ) -> list[np.ndarray]:
    """Instance labels of a normalised batch ``(N, 3, H, W)`` (model already in eval mode).

    The network's ``np`` logits become probabilities (softmax, as in
    :class:`~napari_neuroseg.models.runner.ModelRunner`) and go with ``hv`` through
    :func:`hovernet_instances` with the options ``post``.
    """
    out = model(x)
    prob = torch.softmax(out["np"].float(), dim=1)[:, 1].cpu().numpy()
    hv = out["hv"].float().cpu().numpy()
    return [hovernet_instances(p, h, **post) for p, h in zip(prob, hv, strict=True)]


def instance_scores(model: nn.Module, loader, device: torch.device, post: dict[str, Any]
                    ) -> dict[str, Any]:
    """Mean Dice, AJI, DQ, SQ, PQ over the tiles of ``loader`` and the nuclei counted.

    Tiles are scored one by one as they come (nothing but the scores is kept).
    """
    model.eval()

    def pairs():
        with torch.inference_mode():
            for x, _, instances in loader:
                yield from zip(instances.numpy(), predict_instances(model, x.to(device), post),
                               strict=True)

    return mean_instance_scores(pairs())


def mean_instance_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Score ``(true, predicted)`` instance-label pairs one at a time (:func:`nuclei_metrics`)
    and return the NaN-aware means of :data:`METRIC_KEYS`, ``n_images``, ``nuclei_true`` and
    ``nuclei_pred`` ({} for no pairs). Models and baselines are scored through this alike."""
    rows, n_true, n_pred = [], 0, 0
    for true, pred in pairs:
        scores = nuclei_metrics([true], [pred])
        rows.append([np.nan if scores[k] is None else scores[k] for k in METRIC_KEYS])
        n_true += len(np.unique(true[true > 0]))
        n_pred += int(pred.max())
    if not rows:
        return {}
    means = np.nanmean(np.asarray(rows, dtype=np.float64), axis=0)
    out: dict[str, Any] = {k: float(v) if np.isfinite(v) else None
                           for k, v in zip(METRIC_KEYS, means, strict=True)}
    out.update(n_images=len(rows), nuclei_true=n_true, nuclei_pred=n_pred)
    return out


def tile_loader(tiles: NucleiTiles, batch_size: int) -> DataLoader:
    """Loader of whole tiles: batches when they share a shape, else one by one."""
    return DataLoader(tiles, batch_size=batch_size if tiles.same_shape else 1, shuffle=False)


def plot_example(model: nn.Module, tiles: NucleiTiles, device: torch.device,
                  post: dict[str, Any], path: Path) -> Path:
    """Image, true and predicted instance outlines of the first validation tile."""
    from skimage.segmentation import find_boundaries

    from training.report import _pyplot, _save

    image, _ = tiles.read(tiles.indices[0])
    x, _, true = tiles[0]
    model.eval()
    with torch.inference_mode():
        pred = predict_instances(model, x[None].to(device), post)[0]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, labels, title in ((axes[0], None, "image"), (axes[1], true.numpy(), "annotation"),
                              (axes[2], pred, "prediction")):
        shown = np.array(image, copy=True)
        if labels is not None:
            shown[find_boundaries(labels, mode="inner")] = (255, 255, 0)
            title = f"{title}: {len(np.unique(labels[labels > 0]))} nuclei"
        ax.imshow(shown)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(tiles.data.items[tiles.indices[0]].id, fontsize=9)
    return _save(fig, path)
