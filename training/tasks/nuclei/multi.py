"""``python -m training nuclei`` on several sources at once (``--data`` a folder of datasets).

Each source (a sub-folder holding a ``nuclei`` dataset) is split by patient on its own; the
training samples are source-balanced crops at the model's working resolution
(:class:`training.tasks.nuclei.sources.MixedCrops`) and every epoch is validated on the whole
validation tiles of each source, resampled to that resolution. The scores are given per
source (``pq_monuseg``...) and as their mean (``pq``, the default monitor), so no source
dominates the choice of the best epoch because it has more tiles.

With a source that has nucleus types (CoNSeP), the network gets HoVer-Net's type branch
(``n_types`` = the type map's size, background included) and the type names go in the spec
(``extra["type_classes"]``); the type loss only sees pixels whose type is known.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from napari_neuroseg.dataset.convert_consep import NUCLEUS_TYPES
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.spec import ModelSpec
from training.ddp import DistInfo
from training.tasks._common import (
    build_spec,
    init_weights,
    is_synthetic,
    make_loaders,
    write_outputs,
)
from training.tasks.nuclei.data import nuclei_augment
from training.tasks.nuclei.scoring import METRIC_KEYS, mean_instance_scores, predict_instances
from training.tasks.nuclei.sources import (
    MixedCrops,
    RandomMacenko,
    SourceSet,
    WorkingTiles,
    open_sources,
)
from training.tasks.nuclei.targets import HoVerNetLoss
from training.tasks.nuclei.task import (
    MODEL,
    Config,
    fit_best,
    postprocess_options,
    type_classes,
)

__all__ = ["per_source_scores", "run_sources", "sources_spec", "training_data_label"]

#: Reference tiles per source whose stains :class:`RandomMacenko` draws targets from.
MACENKO_TARGETS_PER_SOURCE = 8


def sources_spec(config: Config, sources: SourceSet) -> ModelSpec:
    """The ``nuclei-hovernet`` spec for these sources: a type branch when one has types."""
    typed = any(s.typed for s in sources.sources)
    n_types = config.n_types if config.n_types is not None else (
        len(NUCLEUS_TYPES) if typed else None)
    spec = build_spec(MODEL, {"base_features": config.base_features,
                              "encoder_depth": config.encoder_depth,
                              "blocks_per_level": config.blocks_per_level,
                              "n_types": n_types},
                      data=sources, init=config.init, synthetic=is_synthetic(config, sources))
    return replace(spec, extra={**spec.extra, "training_data": training_data_label(sources),
                                "postprocess": postprocess_options(config),
                                "type_classes": type_classes(spec, config.init),
                                "sources": {s.name: {"mpp": s.mpp, "tiles": len(s.data.items),
                                                     "typed": s.typed}
                                            for s in sources.sources}})


def training_data_label(sources: SourceSet) -> str:
    """What the checkpoint learnt from: ``"3 sources: lgg (36 tiles), ... H&E"``."""
    parts = ", ".join(f"{s.name} ({len(s.data.items)} tiles, {s.mpp:g} µm/px)"
                      for s in sources.sources)
    return f"{len(sources.sources)} source(s): {parts}; {sources.modality}"


def per_source_scores(model, loader, tiles: WorkingTiles, names, device, post
                      ) -> dict[str, Any]:
    """Dice, AJI, DQ, SQ, PQ per source (``pq_<name>``) and their means over sources."""
    model.eval()
    pairs: dict[int, list] = {}
    with torch.inference_mode():
        start = 0
        for x, _, instances in loader:
            predicted = predict_instances(model, x.to(device), post)
            for k, (true, pred) in enumerate(zip(instances.numpy(), predicted, strict=True)):
                pairs.setdefault(tiles.source_of[start + k], []).append((true, pred))
            start += len(predicted)
    out: dict[str, Any] = {}
    per_key: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    for s, found in sorted(pairs.items()):
        scores = mean_instance_scores(found)
        for key in METRIC_KEYS:
            out[f"{key}_{names[s]}"] = scores.get(key)
            if scores.get(key) is not None:
                per_key[key].append(scores[key])
    out.update({k: float(np.mean(v)) if v else None for k, v in per_key.items()})
    return out


def _augment(config: Config, sources: SourceSet):
    steps = nuclei_augment(config.jitter_p, config.stain_p, config.blur_p) \
        if config.augment else None
    if not config.augment or config.macenko_p <= 0:
        return steps
    tiles = []
    for source in sources.sources:
        picks = source.train[np.linspace(0, len(source.train) - 1,
                                         min(MACENKO_TARGETS_PER_SOURCE, len(source.train)))
                             .astype(int)] if len(source.train) else []
        tiles += [np.asarray(source.data.read_image(source.data.items[int(i)]))[..., :3]
                  for i in picks]
    macenko = RandomMacenko.from_tiles(tiles)

    def augment(image, mask, rng):
        if rng.random() < config.macenko_p:
            image, mask = macenko(image, mask, rng)
        return steps(image, mask, rng)

    return augment


def run_sources(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) on the sources under ``config.data``; validation metrics of the best
    checkpoint, per source and averaged."""
    sources = open_sources(config.data, config.sources, config.val_fraction, config.seed)
    spec = sources_spec(config, sources)
    post = postprocess_options(config)
    model = ModelRegistry().build(spec)
    init_weights(model, config.init)
    crop = int(config.crop_size or spec.input.patch_size[0])
    length = config.samples_per_epoch or 16 * len(sources.sources) * config.batch_size
    train_set = MixedCrops(sources.sources, spec, crop=crop, length=length,
                           scale_jitter=config.scale_jitter, augment=_augment(config, sources))
    val_set = WorkingTiles(sources.sources, spec)
    train, val = make_loaders(train_set, val_set, config, dist, val_batch_size=1)
    loss = HoVerNetLoss(config.np_ce_weight, config.np_dice_weight, config.hv_mse_weight,
                        config.hv_msge_weight, config.tp_ce_weight)
    names = sources.names

    def evaluate_fn(net, loader, device):
        return {**per_source_scores(net, loader, val_set, names, device, post),
                **loss.pop_terms()}

    trainer, history, final, weights = fit_best(model, spec, train, val, loss, evaluate_fn,
                                                config, dist)
    metrics = per_source_scores(final, val, val_set, names, trainer.device, post)
    metrics.update(weights=weights, best_epoch=trainer.best_epoch, sources=list(names))
    for source in sources.sources:
        metrics[f"tiles_{source.name}"] = {"train": len(source.train), "val": len(source.val),
                                           "mpp": source.mpp}
    write_outputs(config, spec, sources, metrics, history, dist=dist, notes=[
        f"Sources {', '.join(names)}, each split by patient and resampled from its µm/px to "
        f"{spec.input.resolution} µm/px; {length} source-balanced {crop} px crops per epoch "
        f"(scale jitter x{config.scale_jitter}, Macenko p {config.macenko_p}).",
        f"Metrics of the {weights} weights (best epoch {trainer.best_epoch} by "
        f"{config.monitor}, mean over sources); post-processing {post}.",
    ])
    return metrics
