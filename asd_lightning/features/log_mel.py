"""Log-mel front end on the training device, built on :mod:`torchaudio.transforms`."""

from __future__ import annotations

import torch
from torch import nn
from torchaudio.transforms import MelSpectrogram


class LogMel(nn.Module):
    """Waveforms ``[..., samples]`` → (log-)mel spectrograms ``[..., n_mels, frames]``.

    Args:
        sample_rate: input sample rate in Hz.
        n_fft: FFT size; ``win_length`` defaults to it.
        hop_length: frame hop in samples.
        n_mels: number of mel bands; ``f_min``/``f_max`` bound them (``f_max`` None = Nyquist).
        power: 2.0 for a power spectrogram, 1.0 for magnitude.
        log: compress with ``20 / power * log10(mel + eps)`` (decibels, as the DCASE baselines
            do); ``False`` keeps the linear mel (the two-BCE authors' setting).
        center: pad the clip so frame ``t`` is centred on sample ``t * hop_length``; a crop of
            ``(frames - 1) * hop_length`` samples then gives exactly ``frames`` frames.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 512,
        n_mels: int = 128,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        log: bool = True,
        eps: float = 1e-10,
        center: bool = True,
    ) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.center = center
        self.n_fft = n_fft
        self.log = log
        self.eps = eps
        self.scale = 20.0 / power
        self.mel = MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
            f_min=f_min, f_max=f_max, n_mels=n_mels, power=power, center=center, pad_mode="reflect",
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        if self.center:
            return num_samples // self.hop_length + 1
        return (num_samples - self.n_fft) // self.hop_length + 1

    def samples_for_frames(self, frames: int) -> int:
        """Shortest waveform length that yields exactly ``frames`` frames."""
        if self.center:
            return (frames - 1) * self.hop_length
        return (frames - 1) * self.hop_length + self.n_fft

    @torch.autocast("cuda", enabled=False)
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wave.float())
        if self.log:
            mel = self.scale * torch.log10(mel + self.eps)
        return mel
