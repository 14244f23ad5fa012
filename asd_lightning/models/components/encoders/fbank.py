"""Kaldi-compatible log-mel filterbanks on the device, the input pipeline of BEATs and AST.

Both feed ``torchaudio.compliance.kaldi.fbank`` (25 ms windows, 10 ms shift) of each clip and
normalise ``(fbank - mean) / (2 std)`` with their checkpoint's statistics; they differ in the
waveform scale (BEATs: ×2¹⁵, 16-bit integer units; AST: as given), the window (BEATs: Povey,
Kaldi's default; AST: Hanning) and AST's fixed length (zero-padded or cut to ``max_length`` frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchaudio.compliance import kaldi


@dataclass(frozen=True)
class KaldiFbank:
    """``[N, samples]`` waveforms → ``[N, frames, num_mel_bins]`` normalised filterbanks (float32)."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    mean: float = 15.41663
    std: float = 6.55582
    scale: float = 2.0 ** 15
    window_type: str = "povey"
    max_length: int | None = None  # frames; None keeps the clip's own length

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            banks = [kaldi.fbank(w[None].float() * self.scale, num_mel_bins=self.num_mel_bins,
                                 sample_frequency=self.sample_rate, frame_length=25, frame_shift=10,
                                 window_type=self.window_type, dither=0.0) for w in wave]
            x = torch.stack(banks)
            if self.max_length is not None:
                x = x[:, : self.max_length]
                x = torch.nn.functional.pad(x, (0, 0, 0, self.max_length - x.shape[1]))
            return (x - self.mean) / (2 * self.std)
