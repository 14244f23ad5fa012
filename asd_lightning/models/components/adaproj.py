"""AdaProj (Wilkinghoff, "AdaProj: adaptively scaled angular margin subspace projections for
anomalous sound detection with auxiliary classification tasks", DCASE Workshop 2024,
arXiv:2403.14179).

Every class ``j`` owns a linear subspace of dimension ``m``, spanned by a fixed (not trained)
random orthonormal basis ``W_j`` (``m × D``). An embedding is compared with its projection onto
each class's subspace: with ``x̂ = x/‖x‖`` and ``P_j x̂ = W_jᵀ W_j x̂``::

    cos θ_j = ⟨x̂, P_j x̂⟩ / ‖P_j x̂‖ = ‖W_j x̂‖
    L = −(1/N) Σ_i Σ_j y_ij log softmax_j(s · cos θ_ij)

with the adaptive scale ``s`` of AdaCos (:mod:`.adaptive_scale`; ``s₀`` from the ``C·m`` basis
vectors), ``θ_i`` the (label-weighted) angle to the sample's own class. A class's embeddings only need to lie near its subspace, not
near one centre, which leaves normal data room for more detail than AdaCos (``m = 1`` is AdaCos
with centres ``±w``). The reference implementations normalise the random basis vectors one by
one; here the basis is orthonormalised, so ``P_j`` is exactly the orthogonal projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asd_lightning.models.components.adaptive_scale import adaptive_scale, initial_scale


class AdaProj(nn.Module):
    """The loss on embeddings ``[N, D]`` and soft labels ``[N, C]`` (``forward``).

    Args:
        embedding_dim: ``D``. num_classes: ``C``. subspace_dim: ``m`` (below ``D``; 32 as ASDKit).
        dynamic: adapt the scale every training step.
    """

    def __init__(self, embedding_dim: int, num_classes: int, subspace_dim: int = 32, dynamic: bool = True) -> None:
        super().__init__()
        if not 1 <= subspace_dim < embedding_dim:
            raise ValueError(f"subspace_dim must be at least 1 and below the embedding size {embedding_dim} (a subspace "
                             f"of full size holds every embedding), got {subspace_dim}")
        self.num_classes = num_classes
        self.dynamic = dynamic
        bases = torch.linalg.qr(torch.randn(num_classes, embedding_dim, subspace_dim)).Q  # orthonormal columns
        self.register_buffer("bases", bases.transpose(1, 2).contiguous())  # [C, m, D]
        # s₀ counts the C·m basis vectors as centres, as the reference implementations do
        self.register_buffer("scale", torch.tensor(initial_scale(num_classes * subspace_dim)))

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` cosines between each embedding and its projection onto each class subspace."""
        coordinates = torch.einsum("nd,cmd->ncm", F.normalize(x.float(), dim=1), self.bases)
        return coordinates.norm(dim=2)

    def update_scale(self, cosines: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            angles = torch.acos(cosines.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
            own = (y * angles).sum(dim=1) / y.sum(dim=1).clamp_min(1e-12)
            self.scale.fill_(adaptive_scale(cosines, y == 0, own, float(self.scale)))

    def log_probs(self, cosines: torch.Tensor) -> torch.Tensor:
        return (self.scale * cosines).log_softmax(dim=1)

    @torch.autocast("cuda", enabled=False)
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cosines = self.cosines(x)
        y = y.float()
        if self.training and self.dynamic:
            self.update_scale(cosines, y)
        return -(y * self.log_probs(cosines)).sum(dim=1).mean()
