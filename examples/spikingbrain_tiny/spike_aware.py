"""Spike-aware fine-tuning: the compiler's spike coding simulated in training.

Every ``nn.Linear`` but the lm_head reads ``V_th * round(x / V_th)`` with SpikingBrain's
per-token threshold ``V_th = clip(mean|x| / k, 1e-5, 1e4)`` (the ``spike_encode`` of the
``spikingbrain`` preset), with a straight-through gradient, while inside ``spiking(model, k)``.
Forward pre-hooks do it, so the model's own code, and its export, stay float.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


def spike_round(x: torch.Tensor, k: float) -> torch.Tensor:
    """x reconstructed from its integer spike counts; the gradient passes straight through."""
    vth = (x.abs().mean(-1, keepdim=True) / k).clamp(1e-5, 1e4)
    return x + (torch.round(x / vth) * vth - x).detach()


@contextlib.contextmanager
def spiking(model: nn.Module, k: float, skip: tuple[str, ...] = ("lm_head",)):
    """Within the block, every linear layer not named in ``skip`` reads spike-rounded inputs."""
    handles = [module.register_forward_pre_hook(lambda _, args: (spike_round(args[0], k),))
               for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name not in skip]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def step_loss(model: nn.Module, ids: torch.Tensor, k: float) -> torch.Tensor:
    """Next-token loss of ``ids`` [B, T+1]: of the float forward when k <= 0, else of the
    spiking one."""
    x, y = ids[:, :-1], ids[:, 1:].reshape(-1)
    with spiking(model, k) if k > 0 else contextlib.nullcontext():
        return F.cross_entropy(model(x).flatten(0, 1), y)
