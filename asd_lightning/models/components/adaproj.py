"""AdaProj (Wilkinghoff, "AdaProj: adaptively scaled angular margin subspace projections for
anomalous sound detection with auxiliary classification tasks", DCASE Workshop 2024,
arXiv:2403.14179).

Every class ``j`` owns a linear subspace of dimension ``m``, spanned by a fixed (not trained)
random orthonormal basis ``W_j`` (``m × D``). An embedding is compared with its projection onto
each class's subspace: with ``x̂ = x/‖x‖`` and ``P_j x̂ = W_jᵀ W_j x̂``::

    cos θ_j = ⟨x̂, P_j x̂⟩ / ‖P_j x̂‖ = ‖W_j x̂‖
    L = −(1/N) Σ_i Σ_j y_ij log softmax_j(s · cos θ_ij)

with the adaptive scale ``s`` of AdaCos (:mod:`.adaptive_scale`; ``s₀`` from the ``C·m`` basis
vectors), ``θ_i`` the (label-weighted) angle to the sample's own class. A class's embeddings
only need to lie near its subspace, not near one centre, which leaves normal data room for more
detail than AdaCos (``m = 1`` is AdaCos with centres ``±w``).

``orthonormal=False`` follows the reference implementations (the author's code and ASDKit):
``m`` random vectors per class, each normalised but not orthogonalised, ``p_j = W_jᵀ W_j x̂``
and ``cos θ_j = ⟨x̂, p_j⟩ / ‖p_j‖``; ``p_j`` is then not exactly the orthogonal projection (for
random vectors in high dimensions nearly so). ``orthonormal=True`` orthonormalises each basis,
so ``cos θ_j = ‖W_j x̂‖`` exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asd_lightning.models.components.adaptive_scale import AdaptiveScaleLoss


class AdaProj(AdaptiveScaleLoss):
    """The loss on embeddings ``[N, D]`` and soft labels ``[N, C]`` (``forward``).

    Args:
        embedding_dim: ``D``. num_classes: ``C``. subspace_dim: ``m`` (below ``D``; 32 as ASDKit).
        dynamic: adapt the scale every training step.
        orthonormal: orthonormalise each class's basis (default) or only normalise its vectors
            (the reference implementations).
    """

    def __init__(self, embedding_dim: int, num_classes: int, subspace_dim: int = 32, dynamic: bool = True,
                 orthonormal: bool = True) -> None:
        if not 1 <= subspace_dim < embedding_dim:
            raise ValueError(f"subspace_dim must be at least 1 and below the embedding size {embedding_dim} (a subspace "
                             f"of full size holds every embedding), got {subspace_dim}")
        # s₀ counts the C·m basis vectors as centres, as the reference implementations do
        super().__init__(num_classes * subspace_dim, dynamic)
        self.num_classes = num_classes
        self.orthonormal = orthonormal
        vectors = torch.randn(num_classes, embedding_dim, subspace_dim)
        bases = torch.linalg.qr(vectors).Q if orthonormal else F.normalize(vectors, dim=1)  # columns
        self.register_buffer("bases", bases.transpose(1, 2).contiguous())  # [C, m, D]

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, 1]`` cosines between each embedding and its projection onto each class subspace."""
        x = F.normalize(x.float(), dim=1)
        coordinates = torch.einsum("nd,cmd->ncm", x, self.bases)
        if self.orthonormal:
            return coordinates.norm(dim=2, keepdim=True)
        projections = F.normalize(torch.einsum("ncm,cmd->ncd", coordinates, self.bases), dim=2)
        return torch.einsum("nd,ncd->nc", x, projections)[..., None]

    def log_probs(self, cosines: torch.Tensor) -> torch.Tensor:
        return (self.scale * cosines[..., 0]).log_softmax(dim=1)
