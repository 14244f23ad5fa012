"""Angular-margin classifiers with an adaptive scale: the strongest published from-scratch recipe
for DCASE 2022-2024 (Wilkinghoff: sub-cluster AdaCos, IJCNN 2021; the ICASSP 2023 design study;
AdaProj, 2024; reproduced in ASDKit).

An encoder (by default :class:`~asd_lightning.models.components.two_branch_encoder.TwoBranchEncoder`:
a spectrogram CNN and a full-length spectrum CNN, no biases) maps whole clips to embeddings; a
margin loss (:class:`~asd_lightning.models.components.sub_cluster_adacos.SubClusterAdaCos`,
AdaCos with one sub-cluster, or :class:`~asd_lightning.models.components.adaproj.AdaProj`) with
fixed class centres or subspaces trains it to tell the classes of ``data.labels`` apart: the
sections, or the attribute combinations within them (all machine types in one model, as the
authors do). Mixup on the waveforms with probability ``mixup_prob`` per sample, ``λ ~ Beta(α, α)``
(``α = 1``: uniform, as the authors' code); the labels by the authors' rule, the elementwise
maximum ``max(λ y, (1 − λ) y′)`` of the weighted one-hots (``mixup_labels=max``; ``blend``:
``λ y + (1 − λ) y′``). Weight decay (the authors' L2) reaches only the convolution and dense
kernels, not biases or batch-norm parameters.

Scoring is not the classifier's: the inlier callback scores the embeddings by their cosine
distance to the nearest training embeddings of the clip's section, with one bank per domain and
the minimum over the two (``callbacks=inlier``, set by ``experiment=sc_adacos`` / ``adaproj``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from asd_lightning.models.base import ASDMethod
from asd_lightning.models.components.mixup import beta_lambdas, mix
from asd_lightning.optim.lars import split_decay


class MarginClassifier(ASDMethod):
    """Encoder + margin loss on the classes of the datamodule's label set.

    Args:
        encoder: ``features → [N, D]`` with an ``embedding_dim`` attribute.
        loss: factory of the margin loss, called with ``embedding_dim`` and ``num_classes``
            (a Hydra partial of ``SubClusterAdaCos`` or ``AdaProj``).
        num_classes: classes; None = from the datamodule (``data.labels``).
        mixup_prob: share of the samples of a training batch that are mixed up (0 = none).
        mixup_alpha: ``α`` of ``λ ~ Beta(α, α)``.
        mixup_labels: ``max`` (the authors' code: elementwise maximum of the weighted one-hots,
            so a mix of one class keeps ``max(λ, 1 − λ)``) or ``blend`` (``λ y + (1 − λ) y′``).
    """

    class_head = "margin"

    def __init__(self, encoder: nn.Module, loss: Callable[..., nn.Module], optimizer=None, scheduler=None,
                 num_classes: int | None = None, mixup_prob: float = 1.0, mixup_alpha: float = 1.0,
                 mixup_labels: str = "max") -> None:
        super().__init__(optimizer, scheduler)
        if not 0.0 <= mixup_prob <= 1.0:
            raise ValueError(f"mixup_prob must be in [0, 1], got {mixup_prob}")
        if mixup_labels not in ("max", "blend"):
            raise ValueError(f"mixup_labels must be 'max' or 'blend', got {mixup_labels!r}")
        self.save_hyperparameters(ignore=["encoder", "loss", "optimizer", "scheduler"], logger=False)
        self.encoder = encoder
        self.loss_factory = loss
        self.init_class_head(num_classes)

    def build_class_head(self, num_classes: int) -> nn.Module:
        if num_classes < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes to tell apart, the data has "
                             f"{num_classes}: train several machine types together, or on attribute classes "
                             "(data.labels=attribute)")
        return self.loss_factory(embedding_dim=self.encoder.embedding_dim, num_classes=num_classes)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features)

    def optimizer_params(self) -> list:
        """Weight decay on convolution and dense kernels only (the authors' L2 regulariser), in
        each group of the shared parameter groups (a pre-trained encoder's layer-wise rates)."""
        return split_decay(self, super().optimizer_params())

    def labels(self, batch: dict) -> torch.Tensor:
        """One-hot class labels ``[N, C]`` of a batch."""
        label = batch["class"].long()
        if (label < 0).any():
            raise ValueError("a training batch holds clips of no class of data.labels (other machine types?); "
                             "the margin classifier trains on the target machine types' classes only")
        return F.one_hot(label, self.margin.num_classes).float()

    def mixed(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup of ``mixup_prob`` of the samples with random in-batch partners (the rest keep λ = 1)."""
        n = len(features)
        if self.hparams.mixup_prob <= 0 or n < 2:
            return features, y
        lam = beta_lambdas(n, self.hparams.mixup_alpha, features.device)
        lam = torch.where(torch.rand(n, device=features.device) < self.hparams.mixup_prob, lam, torch.ones_like(lam))
        partner = torch.randperm(n, device=features.device)
        if self.hparams.mixup_labels == "blend":
            return mix(features, partner, lam), mix(y, partner, lam)
        weight = lam[:, None].to(y.dtype)
        return mix(features, partner, lam), torch.maximum(weight * y, (1 - weight) * y[partner])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        features, y = self.mixed(batch["features"], self.labels(batch))
        loss = self.margin(self.encoder(features), y)
        self.log_dict({"train/loss": loss, "train/scale": self.margin.scale}, on_step=False, on_epoch=True,
                      batch_size=len(y))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        y = self.labels(batch)
        self.log("val/loss", self.margin(self.encoder(batch["features"]), y), batch_size=len(y), sync_dist=True)
