"""Two-microphone clips (DCASE 2026): the near microphone left, the far one right.

The far channel is the near one heard through a small room (:func:`room_response`: a direct
path after a short delay, then exponentially decaying diffuse reflections) plus extra factory
noise at a random signal-to-noise ratio, so it carries the same machine sound, smeared and
noisier, as a real far microphone would.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from .background import factory_background

FAR_SNR_DB = (0.0, 6.0)     # machine-in-room to added noise, per clip
FAR_GAIN = 0.5              # distance attenuation of the direct path


def room_response(rng: np.random.Generator, sr: int, rt60: float = 0.3, seconds: float = 0.25) -> np.ndarray:
    """One impulse response: direct path at 2-6 ms, then decaying noise reverberation (RT60 ``rt60``)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.1
    delay = int(rng.uniform(0.002, 0.006) * sr)
    ir[:delay] = 0.0
    ir[delay] = 1.0
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def far_channel(near: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Far-microphone clips ``(n, samples)`` from near-microphone clips ``(n, samples)``."""
    n, samples = near.shape
    far = np.stack([scipy.signal.fftconvolve(clip, room_response(rng, sr))[:samples] for clip in near])
    far *= FAR_GAIN
    noise = factory_background(rng, n, samples, "source", 1.0, sr)
    snr = rng.uniform(*FAR_SNR_DB, size=(n, 1))
    rms = lambda x: np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True)) + 1e-12  # noqa: E731
    far = far + noise * rms(far) / rms(noise) * 10.0 ** (-snr / 20.0)
    peak = np.max(np.abs(far), axis=-1, keepdims=True)
    return (far * np.minimum(1.0, 0.98 / np.maximum(peak, 1e-12))).astype(np.float32)


def to_stereo(near: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """``(n, samples)`` near-microphone clips → ``(n, samples, 2)``: near left, far right."""
    return np.stack([near, far_channel(near, rng, sr)], axis=-1)
