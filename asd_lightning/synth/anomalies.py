"""Anomaly kinds added to the machine sound of anomalous clips.

Kinds (mixed across the anomalous clips of a section):

* ``tone``       - an extra (sometimes intermittent) tone at a frequency foreign to the machine
* ``impulses``   - a regular train of short resonant knocks (a damaged part striking)
* ``modulation`` - wobbling speed (frequency modulation) and amplitude modulation
* ``friction``   - random band-limited noise bursts (rubbing, scraping)

Every anomalous clip is also a *drifted* unit (:class:`DriftedProfile`): the continuous
parameters of its section's character (shaft speed, resonances, harmonic balance, rhythm ...)
have moved a little (the difficulty's ``drift``), as when a part wears or breaks. A section classifier, which tells units of
one machine type apart by exactly these parameters, is less sure of such a clip.

Levels are relative to the clip's own machine sound and scale with ``strength``; each clip gets
a random severity around it so that some anomalies are subtle and some obvious.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import dsp

ANOMALY_KINDS = ("tone", "impulses", "modulation", "friction")


class DriftedProfile:
    """A section's fixed character (``profile``) with every continuous parameter moved by
    ``amount`` × its range × U(0.5, 1), up or down at random (whole numbers stay)."""

    def __init__(self, profile: np.random.Generator, rng: np.random.Generator, amount: float):
        self.profile, self.rng, self.amount = profile, rng, float(amount)

    def uniform(self, low: float, high: float) -> float:
        value = self.profile.uniform(low, high)
        step = (high - low) * self.amount * self.rng.choice([-1.0, 1.0]) * self.rng.uniform(0.5, 1.0)
        return float(max(value + step, 0.5 * low)) if low > 0 else float(value + step)

    def integers(self, low: int, high: int) -> int:
        return int(self.profile.integers(low, high))


def severities(rng: np.random.Generator, n: int, strength: float) -> np.ndarray:
    """Per-clip anomaly severity, ``(n, 1)``."""
    return strength * dsp.uniform(rng, 0.4, 1.6, n)


def frequency_modulation(rng: np.random.Generator, kinds: Sequence[str | None],
                         severity: np.ndarray, n_samples: int, sr: int = dsp.SAMPLE_RATE):
    """Speed-wobble multiplier for the synthesisers: ``(n, T)`` array, or 1.0 if unused."""
    rows = np.array([k == "modulation" for k in kinds])
    if not rows.any():
        return 1.0
    n, t = len(kinds), dsp.time_axis(n_samples, sr)
    rate, start = dsp.uniform(rng, 0.5, 3.0, n), dsp.uniform(rng, 0.0, dsp.TWO_PI, n)
    depth = np.where(rows[:, None], np.minimum(0.018 * severity, 0.1), 0.0).astype(dsp.DTYPE)
    return 1.0 + depth * np.sin(dsp.TWO_PI * rate * t + start)


def _log_uniform(rng, low, high, n):
    return np.exp(dsp.uniform(rng, np.log(low), np.log(high), n))


def _tone(rng, n, n_samples, sr):
    t = dsp.time_axis(n_samples, sr)
    freq = _log_uniform(rng, 250.0, 6000.0, n)
    vibrato = 1.0 + 0.004 * np.sin(dsp.TWO_PI * dsp.uniform(rng, 3, 7, n) * t)
    tone = np.sqrt(2.0) * np.sin(dsp.phase_from_frequency(freq * vibrato, n_samples, sr))
    gate_rate, gate_start = dsp.uniform(rng, 0.3, 1.5, n), dsp.uniform(rng, 0, dsp.TWO_PI, n)
    gate = 0.5 + 0.5 * np.tanh(4.0 * np.sin(dsp.TWO_PI * gate_rate * t + gate_start))
    intermittent = rng.uniform(size=(n, 1)) < 0.4
    return tone * np.where(intermittent, gate * np.sqrt(2.0), 1.0).astype(dsp.DTYPE)


def _impulses(rng, n, n_samples, sr):
    t = dsp.time_axis(n_samples, sr)
    period = 1.0 / dsp.uniform(rng, 2.0, 10.0, n)
    tau = dsp.uniform(rng, 0.003, 0.012, n)
    env = dsp.decaying_pulses(t, period, dsp.uniform(rng, 0.0, 1.0, n) * period, tau)
    centre = _log_uniform(rng, 800.0, 6000.0, n)
    return 3.0 * env * dsp.band_noise(rng, n, n_samples, centre / 1.5, centre * 1.5, sr)


def _friction(rng, n, n_samples, sr):
    kernel = dsp.decay_kernel(rng.uniform(0.04, 0.15), 0.6, sr, attack_s=0.02)
    env = dsp.event_envelope(rng, n, n_samples, dsp.uniform(rng, 1.0, 4.0, n), kernel, sr)
    centre = _log_uniform(rng, 1000.0, 6000.0, n)
    return 1.6 * env * dsp.band_noise(rng, n, n_samples, centre / 1.4, centre * 1.4, sr)


def _amplitude_modulation(rng, n, n_samples, sr):
    t = dsp.time_axis(n_samples, sr)
    rate, start = dsp.uniform(rng, 2.0, 12.0, n), dsp.uniform(rng, 0.0, dsp.TWO_PI, n)
    return np.sin(dsp.TWO_PI * rate * t + start)


def add_anomalies(rng: np.random.Generator, machine: np.ndarray, kinds: Sequence[str | None],
                  severity: np.ndarray, sr: int = dsp.SAMPLE_RATE) -> np.ndarray:
    """Return ``machine`` with each clip's anomaly (``kinds[i]``, None = normal) added."""
    unknown = set(kinds) - set(ANOMALY_KINDS) - {None}
    if unknown:
        raise ValueError(f"unknown anomaly kind(s) {sorted(unknown)}; known: {ANOMALY_KINDS}")
    out = machine.copy()
    level = dsp.rms(machine)
    for kind in ANOMALY_KINDS:
        rows = np.flatnonzero([k == kind for k in kinds])
        if rows.size == 0:
            continue
        n, n_samples = rows.size, machine.shape[1]
        sev, lvl = severity[rows], level[rows]
        if kind == "tone":
            out[rows] += 0.18 * sev * lvl * _tone(rng, n, n_samples, sr)
        elif kind == "impulses":
            out[rows] += 0.27 * sev * lvl * _impulses(rng, n, n_samples, sr)
        elif kind == "friction":
            out[rows] += 0.26 * sev * lvl * _friction(rng, n, n_samples, sr)
        elif kind == "modulation":
            depth = np.minimum(0.2 * sev, 0.9)
            out[rows] *= 1.0 + depth * _amplitude_modulation(rng, n, n_samples, sr)
    return out
