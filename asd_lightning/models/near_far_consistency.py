"""Noise-aware recipe for the two-microphone clips of DCASE 2026: the far microphone's windows
learn to embed like the near microphone's.

The idea is invariant representation learning (D. Liang, Z. Huang and Z. C. Lipton, "Learning
Noise-Invariant Representations for Robust Speech Recognition", IEEE SLT 2018): train on a clean
and a noisy version of the same input, with the task loss on both and a penalty on the distance
between their embeddings. Here the near microphone is the clean view and the far microphone the
noisy one of the same moment (``data.channels=both``, crops of both channels at the same
position). With ``e`` the L2-normalised embedding of the section classifier
(:class:`~asd_lightning.models.section_id_baseline.SectionIDBaseline`, the official MobileNetV2
baseline) the loss is

    CE(far) + CE(near) + consistency_weight * mean_b ||e(far_b) - sg(e(near_b))||^2

(``sg``: stop-gradient, so the near view is a target and the far embedding moves). Tested
clips are scored like the baseline, the mean of the log-odds over the windows of both channels;
inlier models score the two channels' embeddings side by side. With one channel
(``data.channels=far``) it is the baseline on that channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asd_lightning.models.section_id_baseline import SectionIDBaseline


def near_far_consistency(near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """``mean_b ||e(far_b) - sg(e(near_b))||^2`` of L2-normalised embeddings ``[B, D]``."""
    return (F.normalize(far, dim=-1) - F.normalize(near.detach(), dim=-1)).pow(2).sum(dim=-1).mean()


class NearFarConsistency(SectionIDBaseline):
    """The section classifier trained on both microphones with a near→far consistency target."""

    channel_mode = "paired"  # gets [B, 2, n_mels, frames]: channel 0 near, channel 1 far

    def __init__(self, optimizer=None, scheduler=None, num_classes: int | None = None, width_mult: float = 0.5,
                 in_channels: int = 3, dropout: float = 0.2, eps: float = 1e-7,
                 consistency_weight: float = 1.0) -> None:
        super().__init__(optimizer, scheduler, num_classes, width_mult, in_channels, dropout, eps)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, C, M, T]`` → each channel embedded alone, concatenated ``[N, C * D]``."""
        n, c = features.shape[:2]
        return self.net.embed(features.reshape(n * c, 1, *features.shape[2:])).view(n, -1)

    def _loss(self, batch: dict) -> torch.Tensor:
        features = batch["features"]
        if features.shape[1] == 1:  # one microphone: the baseline
            return F.cross_entropy(self.net(features), batch["class"])
        if features.shape[1] != 2:
            raise ValueError(f"NearFarConsistency takes the near and far channels (data.channels=both), "
                             f"got {features.shape[1]} channels")
        near, far = features[:, :1], features[:, 1:]
        e_near, e_far = self.net.embed(near), self.net.embed(far)
        logits_near, logits_far = self.net.classifier(e_near), self.net.classifier(e_far)
        ce = F.cross_entropy(logits_far, batch["class"]) + F.cross_entropy(logits_near, batch["class"])
        consistency = near_far_consistency(e_near, e_far)
        self.log("train/consistency" if self.training else "val/consistency", consistency, on_step=False,
                 on_epoch=True, batch_size=len(features))
        return ce + self.hparams.consistency_weight * consistency

    def clip_scores(self, batch: dict) -> torch.Tensor:
        """Mean log-odds of the clip's section over the windows of every channel."""
        features = batch["features"]
        if features.dim() == 4:
            features = features[:, None]
        b, s, c = features.shape[:3]
        windows = features.reshape(b, s * c, 1, *features.shape[3:])
        return self.segment_scores(windows, batch["section"]).mean(dim=1)
