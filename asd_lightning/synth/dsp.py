"""Vectorised signal-processing primitives for the synthetic dataset.

Every function works on a batch of clips at once: signals are float32 arrays of shape
``(n_clips, n_samples)`` and per-clip parameters are ``(n_clips, 1)`` columns (or scalars), so
whole batches are produced with array operations only. Spectral shapes are *gain functions*
``f -> gain`` (``f`` is the ``(1, n_freqs)`` row of FFT bin frequencies) that can be combined.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft

SAMPLE_RATE = 16_000
DTYPE = np.float32
TWO_PI = 2.0 * np.pi

GainFn = Callable[[np.ndarray], np.ndarray]


def column(values, n: int) -> np.ndarray:
    """A scalar or a length-``n`` sequence as a float32 ``(n, 1)`` column."""
    arr = np.asarray(values, dtype=DTYPE)
    return np.broadcast_to(arr.reshape(-1, 1) if arr.ndim else arr, (n, 1)).copy()


def uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """Per-clip uniform draws, float32 ``(n, 1)``."""
    return rng.uniform(low, high, size=(n, 1)).astype(DTYPE)


def time_axis(n_samples: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Sample times in seconds, shape ``(1, n_samples)``."""
    return (np.arange(n_samples, dtype=DTYPE) / DTYPE(sr))[None, :]


def rms(x: np.ndarray) -> np.ndarray:
    """Per-clip root mean square, shape ``(n, 1)``."""
    return np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True, dtype=np.float64)
                   + 1e-20).astype(DTYPE)


def unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale every clip to RMS 1."""
    return x / rms(x)


def fft_freqs(n_samples: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    return np.fft.rfftfreq(n_samples, 1.0 / sr).astype(DTYPE)[None, :]


# --- gain functions ---------------------------------------------------------------------

def band(low, high, slope_octaves: float = 0.25) -> GainFn:
    """Smooth band-pass between ``low`` and ``high`` Hz (scalars or ``(n, 1)`` columns)."""
    def gain(f):
        logf = np.log2(np.maximum(f, DTYPE(1.0)))
        rise = 1.0 / (1.0 + np.exp((np.log2(low) - logf) / slope_octaves))
        fall = 1.0 / (1.0 + np.exp((logf - np.log2(high)) / slope_octaves))
        return (rise * fall).astype(DTYPE, copy=False)
    return gain


def bump(centre, gain_db, width_octaves: float = 0.35) -> GainFn:
    """Log-Gaussian resonance with peak ``gain_db`` at ``centre`` Hz."""
    def gain(f):
        dist = np.log2(np.maximum(f, DTYPE(1.0)) / centre) / width_octaves
        peak = 10.0 ** (np.asarray(gain_db, dtype=DTYPE) / 20.0)
        return (1.0 + (peak - 1.0) * np.exp(-0.5 * dist ** 2)).astype(DTYPE, copy=False)
    return gain


def slope(db_per_octave, ref_hz: float = 1000.0) -> GainFn:
    """Spectral tilt of ``db_per_octave`` around ``ref_hz`` (microphone/room colour)."""
    def gain(f):
        octaves = np.log2(np.maximum(f, DTYPE(30.0)) / DTYPE(ref_hz))
        return (10.0 ** (np.asarray(db_per_octave, dtype=DTYPE) / 20.0 * octaves)).astype(
            DTYPE, copy=False)
    return gain


def power_law(exponent, f_min: float = 20.0) -> GainFn:
    """Amplitude ``f ** (-exponent / 2)``: power spectrum ``1 / f**exponent`` (1 pink, 2 brown)."""
    def gain(f):
        return np.exp(-np.asarray(exponent, dtype=DTYPE) / 2.0 * np.log(np.maximum(f, DTYPE(f_min))))
    return gain


def _combined(f: np.ndarray, gains: tuple[GainFn, ...]) -> np.ndarray:
    total = np.ones_like(f)
    for g in gains:
        total = total * g(f)
    return total


# --- noise and filtering ------------------------------------------------------------------

def noise_spectrum(rng: np.random.Generator, n: int, n_samples: int, *gains: GainFn,
                   sr: int = SAMPLE_RATE) -> np.ndarray:
    """Random-phase rfft spectrum (complex64) of unit-RMS noise shaped by ``gains``."""
    f = fft_freqs(n_samples, sr)
    magnitude = np.broadcast_to(_combined(f, gains), (n, f.shape[1]))
    # Parseval: scale the spectrum so that the time signal has (almost exactly) unit RMS.
    power = 2.0 * np.sum(np.square(magnitude, dtype=np.float64), axis=-1, keepdims=True)
    magnitude = magnitude * (n_samples / np.sqrt(power + 1e-30)).astype(DTYPE)
    angle = rng.random((n, f.shape[1]), dtype=DTYPE)
    angle *= DTYPE(TWO_PI)
    spec = np.empty(angle.shape, dtype=np.complex64)
    np.cos(angle, out=spec.real)
    np.sin(angle, out=spec.imag)
    spec *= magnitude
    return spec


def add_tones(rng: np.random.Generator, spec: np.ndarray, n_samples: int, freqs: np.ndarray,
              amps: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Add steady sinusoids (``(n, K)`` frequencies and peak amplitudes) to a spectrum in place.

    Each tone sits on its nearest FFT bin (a spacing of 1 / clip length), which costs nothing
    compared with synthesising it sample by sample.
    """
    bins = np.clip(np.round(freqs * n_samples / sr).astype(np.int64), 1, spec.shape[1] - 2)
    phases = rng.uniform(0.0, TWO_PI, size=bins.shape)
    rows = np.broadcast_to(np.arange(spec.shape[0])[:, None], bins.shape)
    np.add.at(spec, (rows, bins), (amps * n_samples / 2.0 * np.exp(1j * phases)).astype(np.complex64))


def noise(rng: np.random.Generator, n: int, n_samples: int, *gains: GainFn,
          sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS random-phase noise whose magnitude spectrum is the product of ``gains``."""
    return scipy.fft.irfft(noise_spectrum(rng, n, n_samples, *gains, sr=sr), n=n_samples, axis=-1)


def band_noise(rng: np.random.Generator, n: int, n_samples: int, low, high,
               sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS noise band-limited to ``[low, high]`` Hz."""
    return noise(rng, n, n_samples, band(low, high), sr=sr)


def filtered(x: np.ndarray, *gains: GainFn, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Filter every clip of ``x`` with the product of ``gains`` (zero-phase, FFT domain)."""
    spec = scipy.fft.rfft(x, axis=-1)
    spec *= _combined(fft_freqs(x.shape[-1], sr), gains)
    return scipy.fft.irfft(spec, n=x.shape[-1], axis=-1)


# --- envelopes and tones ------------------------------------------------------------------

def smooth_random(rng: np.random.Generator, n: int, n_samples: int, n_knots: int,
                  std: float) -> np.ndarray:
    """Slowly varying random curves: Gaussian knots linearly interpolated, shape ``(n, T)``."""
    n_knots = max(int(n_knots), 2)
    knots = rng.normal(0.0, std, size=(n, n_knots)).astype(DTYPE)
    seg = -(-n_samples // (n_knots - 1))
    frac = (np.arange(seg, dtype=DTYPE) / DTYPE(seg))[None, None, :]
    curve = knots[:, :-1, None] + (knots[:, 1:, None] - knots[:, :-1, None]) * frac
    return curve.reshape(n, -1)[:, :n_samples]


def phase_from_frequency(freq, n_samples: int, sr: int = SAMPLE_RATE,
                         block: int = 400) -> np.ndarray:
    """Running phase (radians) of an instantaneous frequency ``(n, 1)`` or ``(n, T)``.

    Accumulated in float32 within short blocks whose start phases are accumulated in float64
    and wrapped, so values stay small (precise) without a costly per-sample float64 pass.
    """
    freq = np.asarray(freq, dtype=DTYPE)
    n = freq.shape[0]
    n_blocks = -(-n_samples // block)
    inc = np.broadcast_to(freq * DTYPE(TWO_PI / sr), (n, n_samples))
    if n_blocks * block != n_samples:
        inc = np.pad(inc, ((0, 0), (0, n_blocks * block - n_samples)))
    partial = np.cumsum(inc.reshape(n, n_blocks, block), axis=-1)
    totals = partial[:, :, -1].astype(np.float64)
    starts = np.fmod(np.cumsum(totals, axis=-1) - totals, TWO_PI).astype(DTYPE)
    return (partial + starts[:, :, None]).reshape(n, -1)[:, :n_samples]


def harmonic_series(phase: np.ndarray, amps: np.ndarray, multiples, rng: np.random.Generator,
                    f0: np.ndarray | None = None, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Sum of ``amps[:, k] * sin(multiples[k] * phase + random phase)``.

    With ``f0`` (nominal fundamental, ``(n, 1)``) partials above 0.45 * sr are muted.
    """
    n, out = phase.shape[0], np.zeros(phase.shape, dtype=DTYPE)
    tmp = np.empty_like(out)
    offsets = uniform(rng, 0.0, TWO_PI, n * len(multiples)).reshape(n, len(multiples))
    amps = np.asarray(amps, dtype=DTYPE)
    for k, mult in enumerate(multiples):
        a = amps[:, k:k + 1]
        if f0 is not None:
            a = np.where(f0 * mult < 0.45 * sr, a, DTYPE(0.0))
        np.multiply(phase, DTYPE(mult), out=tmp)
        tmp += offsets[:, k:k + 1]
        np.sin(tmp, out=tmp)
        tmp *= a
        out += tmp
    return out


def decaying_pulses(t: np.ndarray, period, offset, tau) -> np.ndarray:
    """Periodic exponentially decaying envelope: ``exp(-((t - offset) mod period) / tau)``."""
    return np.exp(-np.mod(t - offset, period) / tau)


def event_envelope(rng: np.random.Generator, n: int, n_samples: int, rate_hz, kernel: np.ndarray,
                   sr: int = SAMPLE_RATE, amp_range=(0.5, 1.0)) -> np.ndarray:
    """Random (Poisson) events, each a scaled copy of ``kernel``: an envelope ``(n, T)``.

    Events are few (a handful per second), so they are added one slice at a time.
    """
    expected = column(rate_hz, n)[:, 0].astype(np.float64) * n_samples / sr
    counts = rng.poisson(expected)
    total = int(counts.sum())
    rows = np.repeat(np.arange(n), counts)
    starts = rng.integers(0, n_samples, size=total)
    amps = rng.uniform(*amp_range, size=total).astype(DTYPE)
    kernel = np.asarray(kernel, dtype=DTYPE)
    env = np.zeros((n, n_samples), dtype=DTYPE)
    for row, start, amp in zip(rows, starts, amps):
        length = min(len(kernel), n_samples - start)
        env[row, start:start + length] += amp * kernel[:length]
    return env


def decay_kernel(tau_s: float, length_s: float, sr: int = SAMPLE_RATE,
                 attack_s: float = 0.002) -> np.ndarray:
    """Attack-decay kernel (peak 1) used to turn event impulses into bursts."""
    tt = np.arange(int(length_s * sr)) / sr
    return np.minimum(tt / attack_s, 1.0) * np.exp(-tt / tau_s)
