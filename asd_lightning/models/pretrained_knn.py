"""Training-free scoring on a frozen pre-trained encoder (GenRep-style, Saengthong et al. 2024).

``embed`` gives the mean over time of the hidden states of one layer of a frozen pre-trained
encoder (:class:`~asd_lightning.models.components.encoders.pretrained.PretrainedEncoder`,
``finetune: frozen``, no head). Nothing trains: ``asd-train`` only tests, and the inlier callback
scores by k-NN per section with a memory per domain, each domain's scores standardised by its own
fit clips (domain normalisation), the target memory enlarged by memory mixup
(``callbacks.inlier.memory_mixup``; ``experiment=genrep``).
"""

from __future__ import annotations

import torch
from torch import nn

from asd_lightning.models.base import ASDMethod
from asd_lightning.utils.errors import UserError


class PretrainedKNN(ASDMethod):
    """A frozen encoder's embeddings for the inlier callback; nothing to fit."""

    training_free = True

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"], logger=False)
        if any(p.requires_grad for p in encoder.parameters()):
            raise UserError("PretrainedKNN trains nothing: set model.encoder.finetune=frozen and "
                             "model.encoder.embedding_dim=null")
        self.encoder = encoder

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features)
