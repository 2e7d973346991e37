"""CycleGAN inside the one-optimiser, one-backward :class:`training.loop.Trainer` (``stain``).

The reference CycleGAN (Zhu et al. 2017, ``pytorch-CycleGAN-and-pix2pix``) takes two
optimiser steps per batch: the generators with the discriminators frozen, then the
discriminators on detached fakes. :class:`CycleGAN` gets the same gradients from ONE backward
of ``loss_G + loss_D``:

* the generators' adversarial terms run the discriminators through
  :func:`torch.func.functional_call` with DETACHED parameters, so no gradient of a generator
  term reaches a discriminator;
* the discriminator terms see ``fake.detach()`` (through the image pool), so no gradient of
  a discriminator term reaches a generator.

Adam is element-wise, so one Adam over two parameter groups (generators, discriminators)
takes exactly the steps of the reference's two Adam optimisers, and the order matches too:
in the reference the discriminators are also updated on fakes computed before the generator
step, and the generator step sees the discriminators as they were before their own step.

Also here: the image pool, the linear learning-rate decay and the rewrite of the Trainer's
checkpoints (which hold all four networks) into A->B generator checkpoints for the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.func import functional_call

from napari_neuroseg.models.checkpoint import (
    checkpoint_paths,
    read_sidecar,
    read_spec,
    save_checkpoint,
)
from napari_neuroseg.models.registry import ModelRegistry

__all__ = ["GAN_MODES", "CycleGAN", "ImagePool", "export_generator", "linear_decay",
           "spectral_normalise"]

GAN_MODES = ("lsgan", "vanilla")
GENERATOR_PREFIX = "g_ab."


class ImagePool:
    """The reference's history of generated images (Shrivastava et al. 2017).

    Until ``size`` images are stored every query returns its input (and stores it); then
    each image is, with probability 0.5, swapped for a random stored one (which is
    returned), else returned as it is. ``size=0`` disables the pool. Draws from torch's
    global generator, which the Trainer reseeds every epoch. The pool is not part of the
    resumable training state: after ``--resume`` it fills again.

    Parameters
    ----------
    size : int
        Images kept (50 in the reference).
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A detached batch of the same shape: ``images`` or earlier fakes."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                k = int(torch.randint(len(self.images), ()))
                out.append(self.images[k])
                self.images[k] = image
            else:
                out.append(image)
        return torch.cat(out)


def spectral_normalise(module: nn.Module) -> nn.Module:
    """Wrap every convolution and linear layer of ``module`` in spectral normalisation.

    Miyato et al. 2018 (SN-GAN), which the seed write-up found to improve its GAN images:
    each weight is divided by its largest singular value (one power iteration per training
    forward, :func:`torch.nn.utils.parametrizations.spectral_norm`), so the discriminator
    is 1-Lipschitz per layer. Changed in place; returned for chaining.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    for child in list(module.modules()):
        if isinstance(child, nn.Conv2d | nn.Linear):
            spectral_norm(child)
    return module


def _frozen(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with detached parameters: gradients flow to ``x`` only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, (x,))


class CycleGAN(nn.Module):
    """Two generators and two PatchGAN discriminators whose ``forward`` is the total loss.

    ``g_ab`` translates domain A (IHC) to B (H&E) and is the network the plugin runs;
    ``d_b`` tells real B from ``g_ab``'s output, ``d_a`` real A from ``g_ba``'s.

    Parameters
    ----------
    g_ab, g_ba : nn.Module
        Generators A -> B and B -> A (images in [-1, 1]).
    d_a, d_b : nn.Module
        Discriminators of domains A and B (patch logits).
    lambda_cycle : float
        Weight of each cycle-consistency L1 term (10 in the reference, for both cycles).
    lambda_identity : float
        Identity L1 weight, relative to ``lambda_cycle`` (0.5: each identity term is
        weighted ``0.5 * lambda_cycle``); 0 skips the two extra generator passes.
    gan_mode : {"lsgan", "vanilla"}
        Least-squares (MSE to 1/0, the reference default) or binary cross-entropy.
    pool_size : int
        Fakes kept for the discriminators (see :class:`ImagePool`); used in training only.
    label_smoothing : float
        One-sided label smoothing of the discriminators (Salimans et al. 2016): their target
        for real images is ``1 - label_smoothing`` (fakes stay 0; the generators' targets
        stay 1). 0 is the reference CycleGAN.
    """

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, d_a: nn.Module, d_b: nn.Module, *,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5,
                 gan_mode: str = "lsgan", pool_size: int = 50,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, not {gan_mode!r}")
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.lambda_cycle, self.lambda_identity = float(lambda_cycle), float(lambda_identity)
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.gan_mode, self.label_smoothing = gan_mode, float(label_smoothing)
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of both generators (the first optimiser group)."""
        return [*self.g_ab.parameters(), *self.g_ba.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of both discriminators (the second optimiser group)."""
        return [*self.d_a.parameters(), *self.d_b.parameters()]

    def _gan(self, logits: torch.Tensor, real: bool, smooth: bool = False) -> torch.Tensor:
        """GAN loss of ``logits`` against the real (1, or ``1 - label_smoothing`` with
        ``smooth``) or fake (0) target."""
        target = torch.full_like(logits, (1.0 - self.label_smoothing * smooth) if real else 0.0)
        if self.gan_mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of one CycleGAN step.

        Returns
        -------
        dict of str to tensor
            ``loss_g`` (adversarial + cycle + identity; gradients reach the generators only),
            ``loss_d`` (both discriminators, each ``0.5 * (real + fake)``; gradients reach
            the discriminators only) and the terms: ``g_adv_ab``, ``g_adv_ba``, ``cycle_a``,
            ``cycle_b``, ``identity_a``, ``identity_b`` (weighted), ``d_a``, ``d_b``.
        """
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ba(real_b)
        lam, terms = self.lambda_cycle, {}
        terms["g_adv_ab"] = self._gan(_frozen(self.d_b, fake_b), True)
        terms["g_adv_ba"] = self._gan(_frozen(self.d_a, fake_a), True)
        terms["cycle_a"] = F.l1_loss(self.g_ba(fake_b), real_a) * lam
        terms["cycle_b"] = F.l1_loss(self.g_ab(fake_a), real_b) * lam
        if self.lambda_identity > 0:  # G_AB should leave an H&E tile as it is, and G_BA IHC
            weight = lam * self.lambda_identity
            terms["identity_b"] = F.l1_loss(self.g_ab(real_b), real_b) * weight
            terms["identity_a"] = F.l1_loss(self.g_ba(real_a), real_a) * weight
        loss_g = sum(terms.values())
        pooled_b = self.pool_b.query(fake_b) if self.training else fake_b.detach()
        pooled_a = self.pool_a.query(fake_a) if self.training else fake_a.detach()
        terms["d_b"] = 0.5 * (self._gan(self.d_b(real_b), True, smooth=True)
                              + self._gan(self.d_b(pooled_b), False))
        terms["d_a"] = 0.5 * (self._gan(self.d_a(real_a), True, smooth=True)
                              + self._gan(self.d_a(pooled_a), False))
        return {"loss_g": loss_g, "loss_d": terms["d_a"] + terms["d_b"], **terms}

    def forward(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """``loss_G + loss_D`` (one backward gives every network its own gradients).

        In training mode the terms are also summed for :meth:`pop_term_means`.
        """
        parts = self.losses(real_a, real_b)
        if self.training:
            for key, value in parts.items():
                value = value.detach().float()
                self._sums[key] = self._sums[key] + value if key in self._sums else value
            self._steps += 1
        return parts["loss_g"] + parts["loss_d"]

    def pop_term_means(self) -> dict[str, float]:
        """Mean of every loss term over the training steps since the last call (then reset)."""
        means = {k: float(v) / self._steps for k, v in self._sums.items()} if self._steps else {}
        self._sums, self._steps = {}, 0
        return means


def linear_decay(epochs: int, decay_epochs: int) -> Callable[[int], float]:
    """Learning-rate factor per epoch: 1 for ``epochs - decay_epochs`` epochs, then linear.

    During epoch ``e`` of the decay the factor is ``1 - (e - constant + 1) / (decay + 1)``,
    so the last epoch trains at ``1 / (decay_epochs + 1)`` of the initial rate (never 0),
    as the reference's ``lambda_rule`` does.
    """
    if not 0 <= decay_epochs <= epochs:
        raise ValueError(f"decay_epochs must be in [0, epochs={epochs}], got {decay_epochs}")
    constant = epochs - decay_epochs

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch - constant + 1) / (decay_epochs + 1)

    return factor


def export_generator(stem: str | Path, registry: ModelRegistry | None = None) -> bool:
    """Rewrite a Trainer checkpoint of the whole :class:`CycleGAN` as its A->B generator.

    The Trainer saves ``trainer.model`` (all four networks) with the generator's spec; the
    plugin needs a checkpoint whose weights fit that spec. The sidecar's metrics and history
    summary are kept. A checkpoint that already holds only the generator is left alone, so
    calling this again (on ``--resume``) is harmless.

    Returns
    -------
    bool
        Whether the checkpoint was rewritten.
    """
    weights, _ = checkpoint_paths(stem)
    if not weights.is_file():
        return False
    state = load_file(str(weights))
    if not any(key.startswith(GENERATOR_PREFIX) for key in state):
        return False
    spec = read_spec(stem)
    sidecar = read_sidecar(stem)
    generator = (registry or ModelRegistry()).build(spec)
    generator.load_state_dict({key.removeprefix(GENERATOR_PREFIX): value
                               for key, value in state.items()
                               if key.startswith(GENERATOR_PREFIX)})
    save_checkpoint(stem, generator, spec, history=sidecar.get("history"),
                    metrics=sidecar.get("metrics"))
    return True
