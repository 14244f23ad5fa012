"""Cut clips into the model inputs the papers use (all on the device, no copies where possible)."""

from __future__ import annotations

import torch


def evenly_spaced_starts(num_samples: int, crop: int, num: int) -> torch.Tensor:
    """Start offsets of ``num`` crops of ``crop`` samples spread evenly over a clip (overlap allowed)."""
    if crop > num_samples:
        raise ValueError(f"a crop of {crop} samples does not fit a clip of {num_samples} samples")
    return torch.linspace(0, num_samples - crop, num).round().long()


def evenly_spaced_crops(wave: torch.Tensor, crop: int, num: int) -> torch.Tensor:
    """``[B, samples]`` → ``[B, num, crop]`` overlapping crops (two-BCE test setting: 10 × 2 s)."""
    starts = evenly_spaced_starts(wave.shape[-1], crop, num).to(wave.device)
    index = starts[:, None] + torch.arange(crop, device=wave.device)[None, :]
    return wave[:, index]


def sliding_windows(features: torch.Tensor, frames: int, hop: int) -> torch.Tensor:
    """``[B, n_mels, T]`` → ``[B, S, n_mels, frames]`` windows every ``hop`` frames (DG-Mix: 64, 8).

    ``S = (T - frames) // hop + 1``: every window that fits, starting at frame 0.
    """
    if features.shape[-1] < frames:
        raise ValueError(f"{features.shape[-1]} frames are fewer than one window of {frames}")
    return features.unfold(-1, frames, hop).permute(0, 2, 1, 3)


def stack_frames(features: torch.Tensor, context: int) -> torch.Tensor:
    """``[B, n_mels, T]`` → ``[B, T - context + 1, context * n_mels]`` (DCASE AE baseline input).

    Vector ``t`` concatenates frames ``t .. t + context - 1``, frame by frame, as the official
    baseline does.
    """
    windows = features.unfold(-1, context, 1)  # [B, n_mels, V, context]
    return windows.permute(0, 2, 3, 1).reshape(features.shape[0], -1, context * features.shape[1])


def normalize_int16(wave: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """int16 samples ``[B, samples]`` → float in [-1, 1), then ``(x - mean) / std`` per row when
    given (per-machine amplitude statistics); one pass, the input is never changed."""
    wave = wave.to(torch.float32, copy=True)
    if mean is None:
        return wave.div_(32768.0)
    shape = (-1,) + (1,) * (wave.dim() - 1)  # [B, samples] or [B, channels, samples]
    return wave.mul_((1.0 / (32768.0 * std)).view(shape)).sub_((mean / std).view(shape))


def min_clip_samples(test_segments: dict, frontend, sample_rate: int) -> int:
    """Fewest samples a clip needs for :func:`segment_clips`: one test crop or one window (and
    what the front end needs)."""
    kind = test_segments.get("kind", "clip")
    need = frontend.min_samples
    if kind == "crops":
        need = max(need, int(round(float(test_segments["seconds"]) * sample_rate)))
    elif kind == "windows":
        need = max(need, frontend.samples_for_frames(int(test_segments["frames"])))
    return need


def segment_clips(wave: torch.Tensor, frontend, test_segments: dict, sample_rate: int) -> torch.Tensor:
    """Whole float clips ``[B, samples]`` → model inputs per ``test_segments``: ``clip``
    ``[B, 1, M, T]``, ``crops`` ``[B, num, 1, M, T]`` or ``windows`` ``[B, S, 1, M, frames]``."""
    kind = test_segments.get("kind", "clip")
    if kind == "clip":
        return frontend(wave).unsqueeze(1)
    if kind == "crops":
        crop = int(round(float(test_segments["seconds"]) * sample_rate))
        return frontend(evenly_spaced_crops(wave, crop, int(test_segments["num"]))).unsqueeze(2)
    if kind == "windows":
        windows = sliding_windows(frontend(wave), int(test_segments["frames"]), int(test_segments["hop"]))
        return windows.unsqueeze(2)
    raise ValueError(f"test_segments.kind must be clip, crops or windows, got {kind!r}")
