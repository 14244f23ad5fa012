"""The waveform itself as the model input, for methods that compute their own features
(e.g. the margin-loss encoder's log-mel and full-length spectrum branches, on the device)."""

from __future__ import annotations

import torch
from torch import nn

from asd_lightning.features.log_mel import LogMel


class Waveform(nn.Module):
    """Waveforms ``[..., samples]`` → ``[..., 1, samples]``: a one-row "spectrogram" whose frames
    are samples, so crops, batches and segmentation treat it like any other front end."""

    hop_length = 1
    min_samples = 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples

    def samples_for_frames(self, frames: int) -> int:
        return frames

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave.float().unsqueeze(-2)


def build_frontend(sample_rate: int, features: dict | None = None) -> nn.Module:
    """The front end of ``data.features``: ``kind: waveform`` for :class:`Waveform`, else (the
    default, ``kind: log_mel``) :class:`~asd_lightning.features.log_mel.LogMel` with those settings."""
    settings = dict(features or {})
    kind = settings.pop("kind", "log_mel")
    if kind == "waveform":
        if settings:
            raise ValueError(f"data.features with kind: waveform takes no other settings, got {sorted(settings)}")
        return Waveform()
    if kind != "log_mel":
        raise ValueError(f"data.features.kind must be log_mel or waveform, got {kind!r}")
    return LogMel(sample_rate=sample_rate, **settings)
