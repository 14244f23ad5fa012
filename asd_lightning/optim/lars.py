"""LARS (You et al. 2017) as VICReg / DG-Mix use it: SGD with momentum whose step of each
weight tensor is scaled by ``trust_coefficient · ‖w‖ / ‖g + wd · w‖``; biases and
normalisation parameters get neither weight decay nor that adaptation."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def exclude_bias_and_norm(model: nn.Module, weight_decay: float | None = None) -> list[dict]:
    """Parameter groups: weights of convolutions / linear layers (decayed and adapted; the
    optimiser's own weight decay unless ``weight_decay`` is given), and biases plus
    normalisation parameters (no decay, ``lars_exclude``)."""
    adapted, excluded = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
            (excluded if norm or name == "bias" or param.dim() == 1 else adapted).append(param)
    first = {"params": adapted} if weight_decay is None else {"params": adapted, "weight_decay": weight_decay}
    return [first, {"params": excluded, "weight_decay": 0.0, "lars_exclude": True}]


def split_decay(model: nn.Module, groups: list) -> list[dict]:
    """Optimiser ``groups`` of ``model`` (or a plain list of its parameters), each split as
    :func:`exclude_bias_and_norm` splits the model: its conv / dense kernels keep the group's
    settings, its biases and normalisation parameters get no weight decay (``lars_exclude``).
    Keeps the groups' own rates, e.g. a pre-trained encoder's layer-wise ones."""
    excluded = {id(p) for p in exclude_bias_and_norm(model)[1]["params"]}
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": list(groups)}]
    out = []
    for group in groups:
        kernels = [p for p in group["params"] if id(p) not in excluded]
        rest = [p for p in group["params"] if id(p) in excluded]
        out += [{**group, "params": kernels}] if kernels else []
        out += [{**group, "params": rest, "weight_decay": 0.0, "lars_exclude": True}] if rest else []
    return out


class LARS(torch.optim.Optimizer):
    """LARS with momentum 0.9 and trust coefficient 0.001 by default.

    ``params`` may be parameter groups; a group with ``lars_exclude: True`` takes plain SGD
    steps without weight decay (use :func:`exclude_bias_and_norm`).
    """

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001, eps: float = 1e-8) -> None:
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient,
                        eps=eps, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not group["lars_exclude"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0),
                                        group["trust_coefficient"] * w_norm / (u_norm + group["eps"]),
                                        torch.ones_like(w_norm))
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
