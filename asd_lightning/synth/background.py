"""Factory background: coloured noise, distant machinery hum and occasional clatter.

The source and target domains are recorded in different "factories": in the target domain the
noise is browner, louder, the distant hum sits at another frequency and clatter is more
frequent, by an amount that grows with the domain-shift strength.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from . import dsp


def factory_background(rng: np.random.Generator, n: int, n_samples: int, domain: str,
                       shift: float, sr: int = dsp.SAMPLE_RATE) -> np.ndarray:
    """Background of ``n`` clips with an RMS of roughly 1 (before the per-clip level jitter)."""
    target = 1.0 if domain == "target" else 0.0
    exponent = dsp.uniform(rng, 0.9, 1.3, n) + target * 0.18 * shift
    colour = target * shift * dsp.uniform(rng, -0.9, 0.9, n)
    spec = dsp.noise_spectrum(rng, n, n_samples, dsp.power_law(exponent), dsp.slope(colour), sr=sr)

    # distant machinery hum: harmonics of ~60 Hz, each with a weak neighbour 0.5 Hz away (beats)
    hum_hz = dsp.uniform(rng, 58.0, 64.0, n) * (1.0 + target * 0.18 * shift)
    level = (0.5 + target * 0.12 * shift) * np.ones((n, 1), dtype=dsp.DTYPE)
    harmonics = np.array([1, 2, 3, 5], dtype=dsp.DTYPE)
    weights = np.array([1.0, 0.6, 0.35, 0.2], dtype=dsp.DTYPE)
    freqs = np.concatenate([hum_hz * harmonics, hum_hz * harmonics + 0.5], axis=1)
    amps = np.concatenate([level * weights, 0.3 * level * weights], axis=1)
    dsp.add_tones(rng, spec, n_samples, freqs, amps, sr)
    noise = scipy.fft.irfft(spec, n=n_samples, axis=-1)

    kernel = dsp.decay_kernel(0.06, 0.4, sr)
    rate = 0.4 + target * 0.24 * shift
    clatter = dsp.event_envelope(rng, n, n_samples, rate, kernel, sr) * dsp.band_noise(
        rng, n, n_samples, 150.0, 2500.0 * (1.0 + target * 0.18 * shift), sr)
    return noise + 1.5 * clatter
