"""The two-branch encoder of Wilkinghoff's margin-loss systems (IJCNN 2021; ICASSP 2023 "Design
choices for learning embeddings from auxiliary tasks for domain generalization in anomalous
sound detection"; the DCASE 2022-2024 systems): one embedding from a spectrogram and one from
the magnitude spectrum of the whole clip, concatenated.

* spectrogram branch: a time-frequency front end (the log-mel by default), minus its mean over
  time, batch-normalised per frequency, then a small ResNet (16-32-64-128 channels), the maximum
  over time, batch norm and a linear map to ``branch_dim``;
* spectrum branch: ``|FFT|`` of the whole input (``samples / 2`` bins, no Nyquist bin), three
  strided 1-D convolutions (128 channels, kernels 256/64/16, strides 64/32/4), four fully
  connected layers with batch norm, and a linear map to ``branch_dim``.

No convolution or linear layer has a bias, and no batch norm shift feeds the embedding's linear
maps directly (with fixed class centres, biases let the network
map every input to the same point: Wilkinghoff and Kurth, "Why do angular margin losses work
well for semi-supervised anomalous sound detection?", TASLP 2024). The authors' code feeds the
linear magnitude STFT to the spectrogram branch; here any front end module fits (``LogMel``
with ``log: false, power: 1`` is the closest to it).

Input: waveforms as features ``[N, 1, 1, samples]`` (the ``waveform`` front end of the
datamodule); inputs of another length are tiled or cut to ``samples`` first, so the spectrum
has the resolution the branch was built for.
"""

from __future__ import annotations

import torch
from torch import nn

from asd_lightning.features.log_mel import LogMel


def fit_length(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """``[N, L]`` → ``[N, samples]``: the first ``samples`` samples, the clip repeated if shorter."""
    if wave.shape[-1] < samples:
        wave = wave.repeat(1, -(-samples // wave.shape[-1]))
    return wave[:, :samples]


class ResidualBlock(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv-BN-ReLU-conv); a strided or wider block adds
    max-pooled, 1x1-projected input, as the authors' network."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels_in), nn.ReLU(),
            nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels_out), nn.ReLU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
        )
        self.shortcut = nn.Identity() if stride == 1 and channels_in == channels_out else nn.Sequential(
            nn.MaxPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity(),
            nn.Conv2d(channels_in, channels_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class SpectrogramBranch(nn.Module):
    """``[N, F, T]`` spectrogram → ``[N, dim]``."""

    def __init__(self, bins: int, dim: int = 128, channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(bins)
        blocks: list[nn.Module] = [nn.Conv2d(1, channels[0], 7, stride=2, padding=3, bias=False),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(), nn.MaxPool2d(3, stride=2)]
        width = channels[0]
        for i, c in enumerate(channels):
            blocks += [ResidualBlock(width, c, stride=1 if i == 0 else 2), ResidualBlock(c, c)]
            width = c
        self.blocks = nn.Sequential(*blocks)
        with torch.no_grad():
            flat = self.blocks(torch.zeros(2, 1, bins, 32)).shape[1:3].numel()  # 2: batch norm in training mode
        # no learnable shift before the bias-free map: it would pass through as a bias of the
        # embedding (its scale would fold into the map's weights anyway)
        self.head = nn.Sequential(nn.BatchNorm1d(flat, affine=False), nn.Linear(flat, dim, bias=False))

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        x = self.norm(spectrogram - spectrogram.mean(dim=-1, keepdim=True))
        x = self.blocks(x.unsqueeze(1)).amax(dim=-1)  # max over time: [N, C, F']
        return self.head(x.flatten(1))


class SpectrumBranch(nn.Module):
    """``[N, samples]`` waveform → ``|FFT|`` → ``[N, dim]``."""

    def __init__(self, samples: int, dim: int = 128, channels: int = 128, hidden: int = 128,
                 dense_layers: int = 4) -> None:
        super().__init__()
        self.bins = samples // 2
        layers: list[nn.Module] = []
        width = 1
        for kernel, stride in ((256, 64), (64, 32), (16, 4)):
            layers += [nn.Conv1d(width, channels, kernel, stride=stride, padding=kernel // 2, bias=False),
                       nn.ReLU()]
            width = channels
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 1, self.bins)).numel()
        dense: list[nn.Module] = []
        for i in range(dense_layers):
            dense += [nn.Linear(flat if i == 0 else hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
        self.dense = nn.Sequential(*dense, nn.Linear(hidden if dense_layers else flat, dim, bias=False))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(wave.float()).abs()[:, : self.bins]
        return self.dense(self.convs(spectrum.unsqueeze(1)).flatten(1))


class TwoBranchEncoder(nn.Module):
    """Waveforms ``[N, 1, 1, samples]`` → embeddings ``[N, 2 · branch_dim]``.

    Args:
        samples: input length the spectrum branch is built for (the training crop).
        spectrogram: front end of the spectrogram branch (default: ``LogMel`` 1024/512, 128 mels).
        branch_dim: embedding size of each branch (128).
        sample_rate: for the default front end.
        spectrogram_channels: widths of the spectrogram ResNet's four stages (16, 32, 64, 128).
        spectrum_channels: width of the spectrum branch's convolutions and dense layers (128).
    """

    def __init__(self, samples: int, spectrogram: nn.Module | None = None, branch_dim: int = 128,
                 sample_rate: int = 16000, spectrogram_channels: tuple[int, ...] = (16, 32, 64, 128),
                 spectrum_channels: int = 128) -> None:
        super().__init__()
        self.samples = int(samples)
        self.spectrogram = spectrogram if spectrogram is not None else LogMel(sample_rate=sample_rate)
        with torch.no_grad():
            bins = self.spectrogram(torch.zeros(1, self.samples)).shape[-2]
        self.spectrogram_branch = SpectrogramBranch(bins, branch_dim, tuple(spectrogram_channels))
        self.spectrum_branch = SpectrumBranch(self.samples, branch_dim, spectrum_channels, spectrum_channels)
        self.embedding_dim = 2 * branch_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        wave = fit_length(features.reshape(len(features), -1), self.samples)
        with torch.autocast(wave.device.type, enabled=False):
            spectrogram = self.spectrogram(wave.float())
        return torch.cat([self.spectrogram_branch(spectrogram), self.spectrum_branch(wave)], dim=1)
