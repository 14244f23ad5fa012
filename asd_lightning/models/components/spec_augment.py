"""SpecAugment (Park et al. 2019) on log-mel batches ``[N, 1, mels, frames]``: optional time
warp, then frequency and time masks drawn per example (torchaudio's masking)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


def time_warp(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Move one random time point by up to ``max_shift`` frames, stretching the frames on
    either side linearly (one warp for the whole batch)."""
    frames = x.shape[-1]
    if max_shift <= 0 or frames <= 2 * max_shift + 2:
        return x
    centre = int(torch.randint(max_shift + 1, frames - max_shift - 1, ()).item())
    moved = centre + int(torch.randint(-max_shift, max_shift + 1, ()).item())
    left = F.interpolate(x[..., :centre], size=(x.shape[-2], moved), mode="bilinear", align_corners=False)
    right = F.interpolate(x[..., centre:], size=(x.shape[-2], frames - moved), mode="bilinear", align_corners=False)
    return torch.cat([left, right], dim=-1)


class SpecAugment(nn.Module):
    """``freq_masks`` masks of up to ``freq_width`` mel bins and ``time_masks`` masks of up to
    ``time_width`` frames per example, filled with the example's mean; time warp of up to
    ``warp`` frames first (0 = off)."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 16, time_masks: int = 2, time_width: int = 8,
                 warp: int = 5) -> None:
        super().__init__()
        self.freq = torchaudio.transforms.FrequencyMasking(freq_width, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(time_width, iid_masks=True)
        self.freq_masks, self.time_masks, self.warp = freq_masks, time_masks, warp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = time_warp(x, self.warp)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        centred = x - mean  # masks write zeros: the example's mean after adding it back
        for _ in range(self.freq_masks):
            centred = self.freq(centred)
        for _ in range(self.time_masks):
            centred = self.time(centred)
        return centred + mean
