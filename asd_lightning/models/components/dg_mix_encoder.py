"""The DG-Mix encoder (Nejjar et al. 2022, Table 1): a MobileNetV2 at width 0.5 whose head is a
1×1 convolution to 320 channels, a full-size 4×2 convolution and a last 1×1 convolution, giving
a 320-d embedding per 128-mel × 64-frame window (about 1.45 M parameters)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

# (expansion t, channels c, repeats n, stride s) of the bottleneck rows of Table 1
BOTTLENECKS = ((1, 8, 1, 1), (6, 16, 2, 2), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1), (6, 80, 3, 2), (6, 160, 1, 1))


class DGMixEncoder(nn.Module):
    """``[N, 1 or 3, 128, 64]`` log-mel windows → ``[N, 320]`` (a 1-channel input is repeated
    to ``in_channels``). Built from torchvision's MobileNetV2 blocks."""

    def __init__(self, in_channels: int = 3, embedding_dim: int = 320, n_mels: int = 128, frames: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, 16, 3, stride=2, activation_layer=nn.ReLU6)]
        channels, stride = 16, 2
        for t, c, n, s in BOTTLENECKS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
            stride *= s
        kernel = (-(-n_mels // stride), -(-frames // stride))  # what is left of the window: 4 × 2
        layers += [Conv2dNormActivation(channels, embedding_dim, 1, activation_layer=nn.ReLU6),
                   Conv2dNormActivation(embedding_dim, embedding_dim, kernel, padding=0, activation_layer=nn.ReLU6),
                   nn.Conv2d(embedding_dim, embedding_dim, 1)]
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, -1, -1)
        return self.features(x).flatten(1)
