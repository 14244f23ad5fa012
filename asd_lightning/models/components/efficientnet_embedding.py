"""EfficientNet-B0 (timm) with the two-BCE paper's neck: a 128-d embedding of log-mel crops."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


class EfficientNetEmbedding(nn.Module):
    """timm EfficientNet-B0, global average pooling, then Dropout → Linear → BatchNorm → PReLU
    → Linear (Kuroyanagi et al. 2022, sec. IV.A, and the authors' code).

    Weights start random (``pretrained=False``: nothing is downloaded); ``checkpoint_path``
    points timm at a local ImageNet checkpoint instead, adapting its first convolution to
    ``in_channels``. A one-channel log-mel is repeated when ``in_channels`` is 3.
    """

    def __init__(self, model_name: str = "tf_efficientnet_b0", in_channels: int = 1, embedding_dim: int = 128,
                 dropout: float = 0.3, checkpoint_path: str | None = None) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        kwargs = dict(in_chans=in_channels, num_classes=0, global_pool="avg")
        if checkpoint_path:
            path = Path(checkpoint_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"encoder checkpoint {path} does not exist")
            self.backbone = timm.create_model(model_name, pretrained=True,
                                              pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        else:
            self.backbone = timm.create_model(model_name, pretrained=False, **kwargs)
        self.in_channels = in_channels
        width = self.backbone.num_features
        self.neck = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, embedding_dim), nn.BatchNorm1d(embedding_dim),
                                  nn.PReLU(), nn.Linear(embedding_dim, embedding_dim))
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, n_mels, frames]`` → ``[N, embedding_dim]``."""
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, -1, -1)
        return self.neck(self.backbone(x))
