"""The adaptive scale of AdaCos (Zhang et al., "AdaCos: Adaptively scaling cosine logits for
effectively learning deep face representations", CVPR 2019), shared by the margin losses.

With ``M`` class centres (or sub-cluster centres, or class subspaces) the logits are
``s · cos θ``. The scale starts at ``s₀ = √2 · log(M − 1)`` and, in every training step, is set
from the batch before the loss is computed (the dynamic AdaCos, eq. 15 of the paper)::

    s ← log B_avg / cos(min(π/4, θ_med))
    B_avg = (1/N) Σ_i (1 + Σ_{m non-target for i} exp(s · cos θ_im))
    θ_med = median_i θ_i

``non-target`` are the centres of the classes a sample has no share of (label 0, so a mixup of
two classes counts neither as non-target), and ``θ_i`` the sample's angle to its own class
(under mixup the label-weighted mean of the angles to its classes). The ``1`` per sample is not
in the AdaCos paper: it is the reference implementations' (Wilkinghoff's AdaProj code, ASDKit),
whose re-scaling counts the own class as ``exp(0)``; it keeps ``B_avg ≥ 1`` and so ``s ≥ 0`` with
few classes, where the paper's sum over a single non-target class lets ``s`` shrink below zero
once the classes separate (with many classes the non-target sum dominates and the two agree).
``log B_avg`` is computed as a log-sum-exp, so large scales do not overflow.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def initial_scale(num_centres: int) -> float:
    """``s₀ = √2 · log(M − 1)``; AdaCos needs ``M ≥ 3`` centres (with two, s₀ = 0 is a fixed point)."""
    if num_centres < 3:
        raise ValueError(f"the adaptive scale needs at least 3 class centres, got {num_centres}: train on more "
                         "classes (more machine types or sections, data.labels=attribute) or use sub-clusters")
    return math.sqrt(2.0) * math.log(num_centres - 1)


def adaptive_scale(cosines: torch.Tensor, non_target: torch.Tensor, own_angle: torch.Tensor, scale: float) -> float:
    """The next scale from a batch (module docstring).

    Args:
        cosines: ``[N, M]`` cosines of every sample to every centre.
        non_target: ``[N, M]`` True where the centre belongs to a class the sample has no share of.
        own_angle: ``[N]`` the angle ``θ_i`` of each sample to its own class.
        scale: the current scale ``s``.

    Returns the current scale unchanged when the batch has no non-target centre.
    """
    if not non_target.any():
        return float(scale)
    terms = torch.cat([scale * cosines.double()[non_target], cosines.new_zeros(len(cosines), dtype=torch.double)])
    log_b_avg = torch.logsumexp(terms, dim=0) - math.log(len(cosines))  # zeros: the 1 per sample
    theta_med = torch.quantile(own_angle.double(), 0.5)
    return float(log_b_avg / torch.cos(theta_med.clamp(max=math.pi / 4)))


class AdaptiveScaleLoss(nn.Module):
    """Base of the margin losses: ``L = −(1/N) Σ_i Σ_j y_ij log P(j | x_i)`` for soft labels
    ``y`` ``[N, C]``, with the scale set by :func:`adaptive_scale` before each training step
    (``dynamic``; evaluation never moves it). A loss defines its :meth:`cosines` (``[N, C, K]``:
    ``K`` centres per class), :meth:`log_probs` and ``num_classes``."""

    def __init__(self, num_centres: int, dynamic: bool = True) -> None:
        super().__init__()
        self.dynamic = dynamic
        self.register_buffer("scale", torch.tensor(initial_scale(num_centres)))

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_probs(self, cosines: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update_scale(self, cosines: torch.Tensor, y: torch.Tensor) -> None:
        """From a batch's cosines ``[N, C, K]``: the angle to a class is that to its nearest centre."""
        with torch.no_grad():
            angles = torch.acos(cosines.clamp(-1.0 + 1e-7, 1.0 - 1e-7)).amin(dim=2)
            own = (y * angles).sum(dim=1) / y.sum(dim=1).clamp_min(1e-12)
            non_target = (y == 0)[:, :, None].expand_as(cosines).flatten(1)
            self.scale.fill_(adaptive_scale(cosines.flatten(1), non_target, own, float(self.scale)))

    @torch.autocast("cuda", enabled=False)
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cosines = self.cosines(x)
        y = y.float()
        if self.training and self.dynamic:
            self.update_scale(cosines, y)
        return -(y * self.log_probs(cosines)).sum(dim=1).mean()
