"""Loss terms of VICReg (Bardes et al. 2022) and DG-Mix (Nejjar et al. 2022, eqs. 1-4) on a
batch of embeddings ``Z`` ``[N, D]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def variance(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 2: mean over dimensions of ``max(0, 1 − sqrt(Var + eps))`` (hinge on the std)."""
    std = torch.sqrt(z.float().var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Eqs. 3-4: sum of the squared off-diagonal covariances divided by ``D``."""
    z = z.float()
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def consistency(z_mixed: torch.Tensor, z: torch.Tensor, z_other: torch.Tensor, lam: torch.Tensor | float,
                reduction: str = "sum") -> torch.Tensor:
    """Eq. 1: mean over the batch of ``‖z_λ − (λ z + (1 − λ) z′)‖²`` (``λ`` scalar or per row);
    ``reduction="mean"`` also averages over the dimensions, the scale of VICReg's invariance
    (mean squared error) that the weight 25 was tuned for."""
    lam = torch.as_tensor(lam, dtype=torch.float32, device=z.device)
    if lam.dim() == 1:
        lam = lam[:, None]
    target = lam * z.float() + (1 - lam) * z_other.float()
    squared = (z_mixed.float() - target).pow(2)
    if reduction == "mean":
        return squared.mean()
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return squared.sum(dim=1).mean()


def invariance(z: torch.Tensor, z_other: torch.Tensor) -> torch.Tensor:
    """VICReg's invariance term: mean squared error between two views' embeddings."""
    return F.mse_loss(z.float(), z_other.float())
