"""Log-mel front end on the training device, built on :mod:`torchaudio.transforms`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.transforms import MelSpectrogram


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``F.pad(..., mode="reflect")`` on the last axis of ``[N, S]``; 3x faster on the CPU."""
    if pad >= x.shape[-1]:
        return F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]  # its error for too-short input
    return torch.cat([x[:, 1:pad + 1].flip(-1), x, x[:, -pad - 1:-1].flip(-1)], -1)


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
        cpu_chunk: on the CPU, clips are transformed this many at a time with the same
            window, FFT and filterbank as torchaudio; small chunks keep the intermediates in
            cache, which makes the CPU front end about twice as fast. GPUs use torchaudio.
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
        cpu_chunk: int = 8,
    ) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.center = center
        self.n_fft = n_fft
        self.log = log
        self.eps = eps
        self.power = power
        self.cpu_chunk = cpu_chunk
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

    @property
    def min_samples(self) -> int:
        """Shortest waveform the front end accepts (reflect padding needs more than ``n_fft // 2``)."""
        return self.n_fft // 2 + 1 if self.center else self.n_fft

    def samples_for_frames(self, frames: int) -> int:
        """Shortest waveform length that yields exactly ``frames`` frames."""
        if self.center:
            return (frames - 1) * self.hop_length
        return (frames - 1) * self.hop_length + self.n_fft

    def _chunked_cpu(self, wave: torch.Tensor) -> torch.Tensor:
        """torchaudio's mel spectrogram computed ``cpu_chunk`` clips at a time: ``[N, S] → [N, M, T]``."""
        spectrogram = self.mel.spectrogram
        window = spectrogram.window
        left = (self.n_fft - window.numel()) // 2
        window = F.pad(window, (left, self.n_fft - window.numel() - left))
        filterbank = self.mel.mel_scale.fb
        pad = self.n_fft // 2
        outputs = []
        for chunk in wave.split(self.cpu_chunk):
            if self.center:
                chunk = _reflect_pad(chunk, pad)
            spectrum = torch.fft.rfft(chunk.unfold(-1, self.n_fft, spectrogram.hop_length) * window)
            if self.power == 2.0:
                magnitude = spectrum.real.square() + spectrum.imag.square()
            else:
                magnitude = spectrum.abs().pow(self.power)
            outputs.append((magnitude @ filterbank).transpose(-1, -2))
        return torch.cat(outputs)

    @torch.autocast("cuda", enabled=False)
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.float()
        if wave.device.type == "cpu" and self.cpu_chunk > 0 and wave.numel():
            flat = wave.reshape(-1, wave.shape[-1])
            mel = self._chunked_cpu(flat).reshape(*wave.shape[:-1], self.n_mels, -1)
        else:
            mel = self.mel(wave)
        if self.log:
            mel = self.scale * torch.log10(mel + self.eps)
        return mel
