"""The training-free floor: per-clip statistics of the log-mel, no network and nothing to train.

``embed`` gives, per input, the mean and the standard deviation over time of every log-mel band
(``[N, 2 · n_mels]``). Scored by the inlier callback with ``standardize: true`` (every statistic
centred and scaled by the section's fit clips) and a 1-NN (``experiment=logmel_knn``), it tells
in seconds what a trained method has to beat on a dataset.
"""

from __future__ import annotations

import torch

from asd_lightning.models.base import ASDMethod


class LogMelStats(ASDMethod):
    """Mean and standard deviation over time of each log-mel band; ``asd-train`` skips the fit."""

    training_free = True

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, 1, n_mels, T]`` → ``[N, 2 · n_mels]``: the bands' means, then their standard deviations."""
        x = features[:, 0].float()
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, correction=0)], dim=1)
