"""torchvision MobileNetV2 on log-mel windows, as in the official DCASE 2022 baseline."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2


class MobileNetV2Classifier(nn.Module):
    """MobileNetV2 (``width_mult`` 0.5, from scratch) on ``[N, 1, n_mels, frames]`` windows.

    The one-channel log-mel is repeated to ``in_channels`` (3, as the official baseline feeds
    the same image to every channel). ``embed`` gives the globally pooled features (1280-d),
    ``forward`` the section logits.
    """

    def __init__(self, num_classes: int, width_mult: float = 0.5, in_channels: int = 3,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        net = mobilenet_v2(weights=None, width_mult=width_mult, num_classes=num_classes, dropout=dropout)
        self.in_channels = in_channels
        self.features = net.features
        self.classifier = net.classifier
        self.embedding_dim = net.last_channel

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, n_mels, frames]`` → pooled features ``[N, embedding_dim]``."""
        x = x.expand(-1, self.in_channels, -1, -1) if x.shape[1] == 1 else x
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
