"""The official DCASE autoencoder baseline as a method.

Input: vectors of ``context`` (5) consecutive log-mel frames (128 mels → 640 values), every
frame of the crop; loss: mean squared reconstruction error; anomaly score of a clip: the
mean over its vectors of the per-vector mean squared error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asd_lightning.features.segments import stack_frames
from asd_lightning.models.base import ASDMethod
from asd_lightning.models.components.dense_autoencoder import DenseAutoencoder


class AEBaseline(ASDMethod):
    """Dense autoencoder on stacked log-mel frames, scored by reconstruction error."""

    def __init__(self, net: DenseAutoencoder, optimizer=None, scheduler=None, context: int = 5) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.context = context

    def vectors(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, 1, n_mels, T]`` → ``[N, V, context * n_mels]``."""
        return stack_frames(features[:, 0], self.context)

    def reconstruction_errors(self, features: torch.Tensor) -> torch.Tensor:
        """Mean squared error of every vector: ``[N, V]``."""
        vectors = self.vectors(features)
        flat = vectors.flatten(0, 1)
        return (self.net(flat) - flat).pow(2).mean(dim=1).view(vectors.shape[:2])

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Mean bottleneck code over the vectors of each input: ``[N, bottleneck]``."""
        vectors = self.vectors(features)
        return self.net.encoder(vectors.flatten(0, 1)).view(*vectors.shape[:2], -1).mean(dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        flat = self.vectors(batch["features"]).flatten(0, 1)
        loss = F.mse_loss(self.net(flat), flat)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["wave"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self.reconstruction_errors(batch["features"]).mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["wave"]), sync_dist=True)

    def clip_scores(self, batch: dict) -> torch.Tensor:
        features = batch["features"]
        if features.dim() == 5:  # segmented clips: average over all segments' vectors
            b, s = features.shape[:2]
            return self.reconstruction_errors(features.flatten(0, 1)).view(b, -1).mean(dim=1)
        return self.reconstruction_errors(features).mean(dim=1)
