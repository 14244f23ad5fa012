"""The official DCASE 2022 MobileNetV2 baseline: classify the section of each log-mel window.

Training: cross-entropy between the class logits of 64-frame windows and their class (by
default every (machine type, section) pair of the training data is a class, so one run can
hold several machine types; ``data.labels=attribute`` classifies the attribute combinations
within the sections instead). Anomaly score of a clip: the mean over its windows of
``log((1 - p) / p)``, ``p`` the softmax probability of the clip's own section (with attribute
classes: the largest probability among its section's classes, so the attributes of a test
clip are never used), clipped to ``[eps, 1 - eps]``. ``embed`` gives the pooled MobileNetV2
features for inlier models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asd_lightning.models.base import ASDMethod
from asd_lightning.models.components.mobilenetv2_classifier import MobileNetV2Classifier


def section_anomaly_scores(logits: torch.Tensor, own: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``log((1 - p) / p)`` per row of ``logits``, ``p`` the softmax probability of the row's
    class ``own`` (indices ``[N]``), or the largest among its classes (a mask ``[N, K]``)."""
    probs = logits.float().softmax(dim=-1)
    if own.dtype == torch.bool:
        p = probs.masked_fill(~own, 0.0).max(dim=-1).values
    else:
        p = probs.gather(-1, own[:, None].long())[:, 0]
    p = p.clamp(eps, 1 - eps)
    return torch.log1p(-p) - torch.log(p)


class SectionIDBaseline(ASDMethod):
    """MobileNetV2 classifier scored by the log-odds of the true section.

    ``num_classes`` is taken from the datamodule (its label set's classes) when left ``None``,
    and then stored in the hyperparameters, so checkpoints load without the data.
    """

    class_head = "net"  # the whole classifier: its last layer is sized by the classes

    def __init__(self, optimizer=None, scheduler=None, num_classes: int | None = None, width_mult: float = 0.5,
                 in_channels: int = 3, dropout: float = 0.2, eps: float = 1e-7) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.init_class_head(num_classes)

    def build_class_head(self, num_classes: int) -> MobileNetV2Classifier:
        h = self.hparams
        return MobileNetV2Classifier(num_classes, h.width_mult, h.in_channels, h.dropout)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.embed(features)

    def _loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.net(batch["features"]), batch["class"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["wave"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, batch_size=len(batch["wave"]), sync_dist=True)

    def segment_scores(self, features: torch.Tensor, section: torch.Tensor) -> torch.Tensor:
        """Per-window scores ``[B, S]`` of segmented clips ``[B, S, 1, M, T]`` of the section
        classes ``section``."""
        b, s = features.shape[:2]
        logits = self.net(features.flatten(0, 1))
        own = self.classes_of_sections(section).repeat_interleave(s, dim=0)
        return section_anomaly_scores(logits, own, self.hparams.eps).view(b, s)

    def clip_scores(self, batch: dict) -> torch.Tensor:
        features = batch["features"]
        if features.dim() == 4:
            features = features[:, None]
        return self.segment_scores(features, batch["section"]).mean(dim=1)
