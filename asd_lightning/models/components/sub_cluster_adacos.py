"""Sub-cluster AdaCos (Wilkinghoff, "Sub-cluster AdaCos: learning representations for anomalous
sound detection", IJCNN 2021); with one sub-cluster it is AdaCos (Zhang et al., CVPR 2019).

Every class ``j`` has ``K`` sub-cluster centres ``c_jk``: random unit vectors, fixed (not
trained, so no trivial solution in which they collapse). For an embedding ``x``, with
``cos θ_jk = ⟨x/‖x‖, c_jk⟩`` and the adaptive scale ``s`` (:mod:`.adaptive_scale`)::

    P(j | x) = Σ_k exp(s cos θ_jk) / Σ_{l,m} exp(s cos θ_lm)
    L = −(1/N) Σ_i Σ_j y_ij log P(j | x_i)

``y`` are (mixed-up) class labels. The angle of a sample to its class, used for the scale, is
that to the class's nearest sub-cluster centre. The authors' code differs in that detail: it
sums the angles over the sub-clusters, which keeps ``θ_med`` above π/4 (so ``s = √2 log B_avg``),
and counts every centre in ``B_avg``; here both follow the AdaCos paper's definitions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asd_lightning.models.components.adaptive_scale import AdaptiveScaleLoss


class SubClusterAdaCos(AdaptiveScaleLoss):
    """The loss on embeddings ``[N, D]`` and soft labels ``[N, C]`` (``forward``); the scale is
    updated in training mode only (``dynamic``), so validation losses use the trained scale.

    Args:
        embedding_dim: ``D``. num_classes: ``C``. n_subclusters: ``K`` (1 = AdaCos; the paper: 16).
        dynamic: adapt the scale every training step (False keeps ``s₀``, the fixed AdaCos).
    """

    def __init__(self, embedding_dim: int, num_classes: int, n_subclusters: int = 16, dynamic: bool = True) -> None:
        if num_classes < 1 or n_subclusters < 1:
            raise ValueError(f"need at least one class and one sub-cluster, got {num_classes} and {n_subclusters}")
        super().__init__(num_classes * n_subclusters, dynamic)
        self.num_classes = num_classes
        self.n_subclusters = n_subclusters
        centres = nn.init.xavier_uniform_(torch.empty(num_classes * n_subclusters, embedding_dim))
        self.register_buffer("centres", F.normalize(centres, dim=1))

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, K]`` cosines of the embeddings to every sub-cluster centre."""
        return (F.normalize(x.float(), dim=1) @ self.centres.T).view(len(x), self.num_classes, self.n_subclusters)

    def log_probs(self, cosines: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` ``log P(j | x)``: a log-sum-exp over each class's sub-clusters of the
        log-softmax over all centres."""
        logits = self.scale * cosines.flatten(1)
        return logits.log_softmax(dim=1).view_as(cosines).logsumexp(dim=2)
