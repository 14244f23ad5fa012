"""Log-mel front end and the papers' windowing: shapes and values against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchaudio.transforms import MelSpectrogram

from asd_lightning.features.log_mel import LogMel
from asd_lightning.features.segments import evenly_spaced_crops, sliding_windows, stack_frames

SR = 16000


def test_dg_mix_setting_313_frames_and_32_windows() -> None:
    frontend = LogMel(n_fft=1024, hop_length=512, n_mels=128)  # 64 ms / 32 ms at 16 kHz
    mel = frontend(torch.randn(2, 10 * SR))
    assert mel.shape == (2, 128, 313)  # T = 313 as in the paper
    windows = sliding_windows(mel, frames=64, hop=8)
    assert windows.shape == (2, 32, 128, 64)  # B = ceil((313 - 64) / 8) = 32
    assert torch.equal(windows[1, 5], mel[1, :, 40:104])
    crop = frontend.samples_for_frames(64)
    assert frontend(torch.randn(3, crop)).shape == (3, 128, 64)


def test_two_bce_setting_crops_and_224_mels() -> None:
    frontend = LogMel(n_fft=2048, hop_length=256, n_mels=224, f_min=50.0, f_max=7800.0, power=1.0)
    wave = torch.randn(2, 10 * SR)
    crops = evenly_spaced_crops(wave, 2 * SR, 10)
    assert crops.shape == (2, 10, 2 * SR)
    # 10 overlapping 2 s crops spread over 10 s: starts every 8/9 s, first at 0, last ends at the end
    assert torch.equal(crops[0, 0], wave[0, :2 * SR]) and torch.equal(crops[0, -1], wave[0, -2 * SR:])
    assert torch.equal(crops[1, 3], wave[1, round(3 * 8 * SR / 9):round(3 * 8 * SR / 9) + 2 * SR])
    mel = frontend(crops)
    assert mel.shape == (2, 10, 224, 2 * SR // 256 + 1)


def test_log_is_decibels_of_the_linear_mel() -> None:
    wave = torch.randn(1, SR)
    linear = LogMel(log=False)(wave)
    assert torch.allclose(LogMel(log=True)(wave), 10 * torch.log10(linear + 1e-10), atol=1e-4)
    magnitude = LogMel(power=1.0, log=False)(wave)
    assert torch.allclose(LogMel(power=1.0, log=True)(wave), 20 * torch.log10(magnitude + 1e-10), atol=1e-4)
    reference = MelSpectrogram(SR, n_fft=1024, hop_length=512, n_mels=128)(wave)
    assert torch.allclose(linear, reference)


def test_tone_lands_in_the_right_mel_band() -> None:
    t = torch.arange(SR) / SR
    mel = LogMel(n_mels=128, log=False)(torch.sin(2 * torch.pi * 1000 * t)[None])
    band = int(mel[0].mean(dim=1).argmax())
    # centre of mel band k (HTK scale, 128 bands over 0-8 kHz)
    mel_max = 2595 * np.log10(1 + 8000 / 700)
    centre = lambda k: 700 * (10 ** (mel_max * (k + 1) / 129 / 2595) - 1)  # noqa: E731
    assert abs(centre(band) - 1000) < centre(band + 1) - centre(band)


def test_stack_frames_matches_the_official_baseline_loop() -> None:
    features = torch.randn(2, 4, 9)  # [B, n_mels, T]
    vectors = stack_frames(features, 5)
    assert vectors.shape == (2, 5, 20)
    expected = np.zeros((5, 20), dtype=np.float32)
    mel = features[1].numpy()
    for t in range(5):  # the DCASE baseline: vector[:, n_mels*t:n_mels*(t+1)] = mel[:, t:t+V].T
        expected[:, 4 * t:4 * (t + 1)] = mel[:, t:t + 5].T
    assert np.allclose(vectors[1].numpy(), expected)


def test_crops_longer_than_the_clip_are_an_error() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        evenly_spaced_crops(torch.zeros(1, 100), 200, 3)


@pytest.mark.parametrize("settings", [
    {"n_fft": 1024, "hop_length": 512, "n_mels": 128, "power": 2.0},
    {"n_fft": 2048, "hop_length": 256, "n_mels": 224, "f_min": 50.0, "f_max": 7800.0, "power": 1.0},
    {"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 64, "power": 2.0},
    {"n_fft": 512, "hop_length": 256, "n_mels": 40, "power": 2.0, "center": False},
])
@pytest.mark.parametrize("samples", [7000, 2100])  # 2100: the reflect padding is most of the input
def test_chunked_cpu_path_equals_torchaudio(settings: dict, samples: int) -> None:
    wave = torch.randn(2, 5, samples)  # leading dims are kept; 10 clips in chunks of 3
    fast = LogMel(log=False, cpu_chunk=3, **settings)(wave)
    reference = LogMel(log=False, cpu_chunk=0, **settings)(wave)  # cpu_chunk=0: plain torchaudio
    assert fast.shape == reference.shape == (2, 5, settings["n_mels"], LogMel(**settings).num_frames(samples))
    assert torch.allclose(fast, reference, rtol=1e-4, atol=1e-6 * reference.abs().max())


def test_reflect_padding_matches_torch() -> None:
    from asd_lightning.features.log_mel import _reflect_pad

    x = torch.arange(10.0).repeat(3, 1)
    assert torch.equal(_reflect_pad(x, 3)[0], torch.tensor([3., 2., 1., 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 8., 7., 6.]))
    with pytest.raises(RuntimeError, match="[Pp]adding size"):
        _reflect_pad(x, 10)  # torch's own error for padding longer than the input
