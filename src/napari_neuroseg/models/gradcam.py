"""Grad-CAM heatmaps for classifiers (Selvaraju et al., 2017).

For a class score ``y`` and the activations ``A_k`` (channel ``k``) of a target layer,
``alpha_k = mean_{i,j} dy / dA_k[i, j]`` and ``cam = ReLU(sum_k alpha_k A_k)``; the map is
upsampled bilinearly to the input size and divided by its maximum, giving ``[0, 1]``.

Gradients are taken with :func:`torch.autograd.grad` with respect to the captured activation
only, so the model's ``.grad`` buffers are left untouched and the function can run between
training steps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_layer: str | nn.Module = "layer4",
    class_index: int = 0,
) -> np.ndarray:
    """Grad-CAM heatmap of one class score for each image of a batch.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning ``(N, K)`` logits (``K = 1`` for :class:`ResNet50Slice`).
        It is run in eval mode; its training mode is restored afterwards.
    x : Tensor, shape (N, C, H, W)
        Input batch, on the model's device.
    target_layer : str or torch.nn.Module
        Sub-module whose output is explained: a dotted name (``"layer4"``,
        ``"layer4.2.conv3"``, ``"features.3"``) or the module itself. Its output must be
        ``(N, C', h, w)``.
    class_index : int
        Column of the logits to explain.

    Returns
    -------
    numpy.ndarray, shape (N, H, W), float32
        Heatmaps in ``[0, 1]``; an image whose class score has no positive evidence in the
        layer gets an all-zero map.
    """
    if x.ndim != 4:
        raise ValueError(f"grad_cam expects an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    layer = _resolve_layer(model, target_layer)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            score = _class_score(logits, class_index)
            if not captured:
                raise RuntimeError(f"target layer {target_layer!r} was not run by the model")
            activation = captured[-1]
            (grads,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
        model.train(was_training)
    cam = _weighted_activation(activation.detach(), grads)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return _normalise(cam[:, 0]).cpu().numpy().astype(np.float32)


def _resolve_layer(model: nn.Module, target_layer: str | nn.Module) -> nn.Module:
    if isinstance(target_layer, nn.Module):
        return target_layer
    try:
        return model.get_submodule(target_layer)
    except AttributeError as err:
        names = [n for n, _ in model.named_children()]
        raise ValueError(
            f"model {type(model).__name__} has no layer {target_layer!r}; top-level layers: {names}"
        ) from err


def _class_score(logits: torch.Tensor, class_index: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("grad_cam needs a classifier returning (N, K) logits")
    if not -logits.shape[1] <= class_index < logits.shape[1]:
        raise ValueError(f"class_index {class_index} out of range for {logits.shape[1]} classes")
    # Images of a batch are independent, so the gradient of the sum is each image's gradient.
    return logits[:, class_index].sum()


def _weighted_activation(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    if activation.ndim != 4:
        raise ValueError(
            f"target layer output must be (N, C, h, w), got shape {tuple(activation.shape)}"
        )
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1, keepdim=True))


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam)).clamp(0, 1)
