"""Mixup helpers shared by the methods: per-sample ``λ`` and in-batch partners."""

from __future__ import annotations

import torch


def beta_lambdas(n: int, alpha: float, device: torch.device | str) -> torch.Tensor:
    """``n`` mixing rates ``λ ~ Beta(α, α)``."""
    return torch.distributions.Beta(alpha, alpha).sample((n,)).to(device)


def blend(x: torch.Tensor, other: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``λ x + (1 − λ) other`` with one ``λ`` per sample (first dimension)."""
    lam = lam.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return lam * x + (1 - lam) * other


def mix(x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``λ x + (1 − λ) x[partner]``: mixup with in-batch partners."""
    return blend(x, x[partner], lam)


def partners_in_group(groups: torch.Tensor) -> torch.Tensor:
    """For each sample a random other sample of the same group (itself when alone in it)."""
    n = len(groups)
    same = groups[:, None] == groups[None, :]
    others = same & ~torch.eye(n, dtype=torch.bool, device=groups.device)
    scores = torch.rand(n, n, device=groups.device).masked_fill(~others, -1.0)
    best = scores.argmax(dim=1)
    return torch.where(others.any(dim=1), best, torch.arange(n, device=groups.device))
