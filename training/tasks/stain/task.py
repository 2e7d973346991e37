"""``python -m training stain``: CycleGAN IHC -> H&E stain translation.

The CycleGAN part of the CycleGAN + HoVer-Net recipe (docs/training-recipes.md).

Unpaired RGB tiles, ``domain`` "A" (IHC) or "B" (H&E) (docs/dataset-format.md). Two ResNet
generators (A->B is the plugin's ``ihc-to-he`` model) and two 70x70 PatchGAN discriminators,
trained as one module in the shared :class:`~training.loop.Trainer` (see
:mod:`training.tasks.stain.gan` for how one backward gives each network its own gradients).

The seed write-up for 004 names CycleGAN and lists PSNR and SSIM among its image metrics but
gives no hyperparameters, so the defaults are those of the CycleGAN paper and its reference
code (``pytorch-CycleGAN-and-pix2pix``): LSGAN loss, cycle weight 10, identity weight
0.5 x 10, Adam lr 2e-4 betas (0.5, 0.999), batch size 1, 100 epochs at constant lr then 100
with linear decay, a pool of 50 fakes, instance norm, 9 residual blocks, 256 px random
crops. Departures, as a histology maintainer would make them: no resize before cropping (it
would change the µm/px the model is run at; ``convert_stain`` resamples whole tiles to the
model's µm/px instead), 90° rotations with the flips (tissue has no up) and, from the seed,
one-sided label smoothing 0.1 of the discriminators (0 restores the reference); spectral
normalisation and a separate discriminator rate are options.

Checkpoints: the Trainer saves the four-network module; ``checkpoints/best`` and ``last``
are rewritten as the A->B generator with the ``ihc-to-he`` spec (at the start of the next
epoch and after training), which the plugin loads. The full state stays in ``state/`` for
``--resume``. Item pairs (for paired metrics): ``extra["pair"]`` of an A or B item names
the item of the other domain cut from the same place (e.g. BCI's consecutive sections).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_neuroseg.dataset import Dataset
from napari_neuroseg.dataset.manifest import Item
from napari_neuroseg.models.checkpoint import LoadedModel
from napari_neuroseg.models.cyclegan import PatchDiscriminator
from napari_neuroseg.models.registry import ModelRegistry
from napari_neuroseg.models.runner import ModelRunner
from napari_neuroseg.models.spec import ModelSpec
from training.config import TrainConfig
from training.ddp import DistInfo
from training.loop import Trainer
from training.tasks._common import (
    DataError,
    build_spec,
    init_weights,
    is_synthetic,
    make_loaders,
    open_task_dataset,
    task_split,
    trainer_options,
    write_outputs,
)
from training.tasks.stain.data import (
    UnpairedTiles,
    check_dataset,
    check_monitor,
    crop_size,
    domain_sides,
)
from training.tasks.stain.gan import (
    CycleGAN,
    export_generator,
    linear_decay,
    spectral_normalise,
)
from training.tasks.stain.ihc_nuclei import ihc_nuclei_comparison
from training.tasks.stain.metrics import (
    crop4,
    pair_map,
    plot_translation_grid,
    translation_metrics,
)

NAME = "stain"
DATASET_TASK = "stain"
HELP = "CycleGAN IHC -> H&E stain translation (the ihc-to-he generator)"
DESCRIPTION = (
    "Train a CycleGAN (two ResNet generators, two PatchGAN discriminators, LSGAN + cycle + "
    "identity losses) on unpaired IHC (domain A) and H&E (domain B) tiles of a dataset in the "
    "export layout; checkpoints/best and last hold the A->B generator (ihc-to-he) for the "
    "plugin. Writes cycle-reconstruction and identity PSNR/SSIM, paired PSNR/SSIM where items "
    "name their pair in extra.pair, LAB colour-statistics distances, a tile grid and "
    "report.md; evaluate on IHC tiles with nuclei masks scores nuclei found through the "
    "translation."
)
SPEC_NAME = "ihc-to-he"


@dataclass
class Config(TrainConfig):
    """Options of the ``stain`` task (plus those every task shares).

    Attributes
    ----------
    base_features, n_blocks : int or None
        Generator width and residual blocks; None keeps the registry's (64, 9).
    norm : str
        ``instance`` (CycleGAN), ``batch`` or ``none``, for generators and discriminators.
    disc_features, disc_layers : int
        PatchGAN width (64) and stride-2 layers (3: 70x70 patches).
    gan_mode : str
        ``lsgan`` (least squares, the reference default) or ``vanilla`` (cross-entropy).
    lambda_cycle : float
        Weight of each cycle L1 term (10).
    lambda_identity : float
        Identity L1 weight relative to ``lambda_cycle`` (0.5); 0 turns it off.
    pool_size : int
        Generated images kept for the discriminators (50; 0 = none).
    label_smoothing : float
        One-sided label smoothing of the discriminators: real target ``1 - label_smoothing``
        (0.1; the seed write-up names label smoothing among its stabilisers, 0.1 is the
        usual value of Salimans et al. 2016; 0 = the reference CycleGAN).
    spectral_norm : bool
        Spectral normalisation of every discriminator convolution (the seed's other
        stabiliser; off by default, as in the reference).
    lr_d : float or None
        Discriminator learning rate; None = ``lr`` (the seed found a higher one steadier).
    beta1, beta2 : float
        Adam betas (0.5, 0.999).
    epochs, batch_size, lr : int, int, float
        200 (100 constant + 100 decaying), 1 and 2e-4 as in the reference; ``lr`` is the
        generators' rate.
    decay_epochs : int or None
        Last epochs over which the lr decays linearly; None = ``epochs // 2``. The rate is
        set from the epoch at each epoch start, so ``--resume`` with more ``epochs``
        follows the longer schedule.
    crop_size : int
        Training crop (random; centre crop for the validation loss). Tiles smaller than
        this set the crop (rounded down to a multiple of 4).
    tiles_per_epoch : int or None
        Training steps x batch size per epoch; None = ``max(n_A, n_B)`` training tiles (each
        A tile once, with random B tiles). Sets how often validation and checkpoints (the
        points ``--resume`` continues from) come.
    b_by_area : bool
        Draw the H&E tile of each step in proportion to its area (True), not uniformly.
    augment : bool
        Random flips and 90° rotations (geometry only: colour changes would teach the
        generators the wrong stain).
    val_fraction : float
        Share of patients (else slides) held out; the split is stratified by domain.
    grid_tiles : int
        Validation tiles per domain in ``plots/translation_grid.png``.
    monitor, mode : str
        ``epoch``/``max`` makes the best checkpoint the last one, as the reference tests
        its latest weights (GAN losses do not measure translation quality). Alternatives:
        ``color_distance_ab`` (min), ``paired_ssim_ab`` (max, needs validation pairs),
        ``cycle_ssim_a`` (max; an identity mapping scores best).
    init : str or None
        A generator checkpoint (``ihc-to-he``) to start the A->B generator from.
    amp : bool
        bf16/fp16 autocast on CUDA (the reference trains in fp32; set false to match it).
    """

    base_features: int | None = None
    n_blocks: int | None = None
    norm: str = "instance"
    disc_features: int = 64
    disc_layers: int = 3
    gan_mode: str = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    label_smoothing: float = 0.1
    spectral_norm: bool = False
    epochs: int = 200
    batch_size: int = 1
    lr: float = 2e-4
    lr_d: float | None = None
    beta1: float = 0.5
    beta2: float = 0.999
    decay_epochs: int | None = None
    crop_size: int = 256
    tiles_per_epoch: int | None = None
    b_by_area: bool = True
    augment: bool = True
    val_fraction: float = 0.2
    grid_tiles: int = 4
    monitor: str = "epoch"
    mode: str = "max"


def _build(config: Config, spec: ModelSpec) -> CycleGAN:
    """The four networks, seeded without touching the global RNG."""
    registry = ModelRegistry()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        g_ab, g_ba = registry.build(spec), registry.build(spec)
        d_a, d_b = (PatchDiscriminator(3, config.disc_features, config.disc_layers, config.norm)
                    for _ in range(2))
        if config.spectral_norm:
            d_a, d_b = spectral_normalise(d_a), spectral_normalise(d_b)
    return CycleGAN(g_ab, g_ba, d_a, d_b, lambda_cycle=config.lambda_cycle,
                    lambda_identity=config.lambda_identity, gan_mode=config.gan_mode,
                    pool_size=config.pool_size, label_smoothing=config.label_smoothing)


def _optimizer_factory(config: Config):
    def factory(model: CycleGAN) -> torch.optim.Optimizer:
        lr_d = config.lr if config.lr_d is None else config.lr_d
        return torch.optim.Adam(
            [{"params": model.generator_parameters()},
             {"params": model.discriminator_parameters(), "lr": lr_d}],
            lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)

    return factory


def _forward(net: torch.nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
    real_a, real_b = (t.to(device, non_blocking=True) for t in batch[:2])
    return net(real_a, real_b), int(real_a.shape[0])


def _unused_loss(*_: Any) -> torch.Tensor:
    raise RuntimeError("the stain task computes its losses in CycleGAN.forward")


def _runners(model: CycleGAN, spec: ModelSpec, device: torch.device, batch_size: int):
    # torch: the weights change between epochs, an exported copy would go stale
    return (ModelRunner(model.g_ab, spec, device=device, batch_size=batch_size,
                        backend="torch"),
            ModelRunner(model.g_ba, spec, device=device, batch_size=batch_size,
                        backend="torch"))


def _items(data: Dataset, indices: np.ndarray) -> list[Item]:
    return [data.items[int(i)] for i in indices]


def _grid(model: CycleGAN, spec: ModelSpec, data: Dataset, sides: dict[str, np.ndarray],
          n: int, device: torch.device, path) -> Any:
    """Input / translated / reconstructed for ``n`` validation tiles of each domain."""
    ab, ba = _runners(model, spec, device, 1)
    rows = []
    for key, forward, backward in (("val_a", ab, ba), ("val_b", ba, ab)):
        for item in _items(data, sides[key][:n]):
            image = crop4(np.asarray(data.read_image(item))[..., :3])
            x = image.transpose(2, 0, 1)[None].astype(np.float32)
            fake = forward(x)
            rec = backward(fake * 255.0)
            rows.append((f"{item.id} ({item.domain})",
                         [x[0].transpose(1, 2, 0) / 255.0, fake[0].transpose(1, 2, 0),
                          rec[0].transpose(1, 2, 0)]))
    return plot_translation_grid(rows, path)


def _export(trainer: Trainer) -> None:
    if trainer.run is not None and trainer.dist.is_main:
        for stem in (trainer.run.best, trainer.run.last):
            export_generator(stem)


def _epoch_start(config: Config):
    """Callback: set this epoch's learning rates, and export the previous epoch's generator.

    The rates are a function of the epoch and the configuration only (not a scheduler
    state), so ``--resume`` with more ``epochs`` follows the new schedule.
    """
    decay = config.epochs // 2 if config.decay_epochs is None else config.decay_epochs
    factor = linear_decay(config.epochs, decay)
    base = (config.lr, config.lr if config.lr_d is None else config.lr_d)

    def callback(trainer: Trainer, epoch: int) -> None:
        for group, lr in zip(trainer.optimizer.param_groups, base, strict=True):
            group["lr"] = lr * factor(epoch)
        _export(trainer)

    return callback


def evaluate(loaded: LoadedModel, data: Dataset, device: torch.device,
             batch_size: int = 8) -> dict[str, Any]:
    """A->B numbers of an ``ihc-to-he`` checkpoint on every item of ``data``.

    Only the A->B generator is in a checkpoint, so there are no cycle numbers: for A items
    paired with a B item (``extra["pair"]``) PSNR/SSIM of the translation against the real
    H&E tile, and the LAB colour-statistics distance of all translated A tiles to all B
    tiles, next to that of the untranslated tiles (see :mod:`training.tasks.stain.metrics`).
    When A items have nuclei masks (instance ids), what the translation is for is scored
    too (:func:`training.tasks.stain.ihc_nuclei.ihc_nuclei_comparison`): the shipped H&E
    nuclei model on the raw and on the translated IHC, and the classical method on the raw
    IHC; ``nuclei`` holds the rows and the Markdown table is printed.
    """
    if loaded.spec.task != "image_translation":
        raise DataError(f"{loaded.path}: model {loaded.spec.name!r} is a "
                        f"{loaded.spec.task} model, not an image translation (ihc-to-he)")
    a_items = [item for item in data.items if item.domain == "A"]
    b_items = [item for item in data.items if item.domain == "B"]
    if not a_items:
        raise DataError(f"{data.path}: no domain 'A' (IHC) items to translate")
    runner = ModelRunner(loaded.model, loaded.spec, device=device, batch_size=batch_size)
    try:
        metrics = translation_metrics(data, a_items, b_items, runner, None, batch_size)
    except ValueError as err:
        raise DataError(str(err)) from err
    if any(item.mask is not None for item in a_items):
        nuclei = ihc_nuclei_comparison(loaded, data, device)
        print(nuclei.pop("table"), flush=True)
        metrics["nuclei"] = nuclei
    return metrics


def run(config: Config, dist: DistInfo | None = None) -> dict[str, Any]:
    """Train (or resume) the CycleGAN and return the final validation numbers."""
    data = open_task_dataset(config.data, DATASET_TASK)
    check_dataset(data)
    spec = build_spec(SPEC_NAME, {"base_features": config.base_features,
                                  "n_blocks": config.n_blocks, "norm": config.norm},
                      synthetic=is_synthetic(config, data), data=data, init=config.init)
    domains = [int(item.domain == "B") for item in data.items]
    split = task_split(data, config.val_fraction, config.seed, stratify=domains)
    sides = domain_sides(data, split)
    crop = crop_size(config, data, sides)
    val_a, val_b = _items(data, sides["val_a"]), _items(data, sides["val_b"])
    val_pairs = pair_map(data, [*val_a, *val_b])
    check_monitor(config, val_pairs)
    on_epoch_start = _epoch_start(config)
    model = _build(config, spec)
    init_weights(model.g_ab, config.init)
    train, val = make_loaders(
        UnpairedTiles(data, sides["train_a"], sides["train_b"], crop, spec, train=True,
                      augment=config.augment, length=config.tiles_per_epoch,
                      by_area=config.b_by_area),
        UnpairedTiles(data, sides["val_a"], sides["val_b"], crop, spec, train=False),
        config, dist)

    def evaluate_fn(net: CycleGAN, loader, device) -> dict[str, float]:
        found = translation_metrics(data, val_a, val_b, *_runners(net, spec, device,
                                                                  config.batch_size),
                                    batch_size=config.batch_size)
        found = {k: v for k, v in found.items() if not k.startswith("n_")}
        return {**found, **{f"train_{k}": v for k, v in net.pop_term_means().items()}}

    trainer = Trainer(
        model, spec, train, val, _unused_loss, _optimizer_factory(config),
        forward=_forward, evaluate_fn=evaluate_fn, callbacks=[on_epoch_start],
        **trainer_options(config, dist))
    history = trainer.fit(resume=config.resume)
    _export(trainer)
    ab, ba = _runners(trainer.model, spec, trainer.device, config.batch_size)
    metrics = translation_metrics(data, val_a, val_b, ab, ba, config.batch_size)
    metrics.update(best_epoch=trainer.best_epoch, crop_size=crop,
                   **{f"{k}_tiles": int(v.size) for k, v in sides.items()})
    plots = []
    if config.out and (dist is None or dist.is_main):
        plots.append(_grid(trainer.model, spec, data, sides, config.grid_tiles,
                           trainer.device, trainer.run.plots / "translation_grid.png"))
    write_outputs(config, spec, data, metrics, history, plots=plots, dist=dist, notes=[
        f"Split by patient (else slide): {len(split.train_patients)} training, "
        f"{len(split.val_patients)} validation groups; {len(val_pairs)} validation pairs.",
        f"Training crops {crop} px; validation numbers on whole tiles (cropped to a multiple "
        "of 4) with the last epoch's generators.",
        "checkpoints/best and last hold the A->B generator (ihc-to-he); best is chosen by "
        f"{config.monitor} ({config.mode}).",
        "cycle_*: A->B->A (B->A->B) reconstruction vs the input (content kept, not realism); "
        "identity_*: A->B on real H&E (B->A on real IHC) vs the tile (should change nothing); "
        "paired_*: translation vs the paired real tile (as good as the pairs' registration); "
        "color_distance_*: LAB mean/std distance of translated tiles to the target domain "
        "(color_distance_untranslated: before translation).",
    ])
    return metrics
