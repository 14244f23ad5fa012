"""Normal operating sound of each machine type, synthesised for a batch of clips.

Every synthesiser takes a :class:`Batch` (random generator, time axis, per-clip attribute
values, the section's fixed profile, optional frequency modulation) and returns float32 audio
of shape ``(n, T)`` with an RMS of roughly 1. Attributes change the sound: speed-like values
move the fundamental, load-like values the harmonic balance, patterns the rhythm, microphone
or location values the spectral colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import dsp
from .attributes import SCHEMAS, numeric, stable_id


@dataclass
class Batch:
    """Everything a machine synthesiser needs for ``n`` clips of one section and domain."""

    rng: np.random.Generator
    n: int
    n_samples: int
    attrs: dict[str, list[str]]  # key -> per-clip values
    profile: np.random.Generator  # fixed per (machine type, section): the section's character
    fm: np.ndarray | float = 1.0  # speed-wobble multiplier (anomalies), (n, T) or 1
    sr: int = dsp.SAMPLE_RATE
    spread: float = 1.0  # x the per-clip spread of the operating point (difficulty)
    t: np.ndarray = field(init=False)

    def __post_init__(self):
        self.t = dsp.time_axis(self.n_samples, self.sr)

    def value(self, key: str) -> np.ndarray:
        """Numeric attribute values, ``(n, 1)``."""
        return dsp.column([numeric(v) for v in self.attrs[key]], self.n)

    def position(self, machine_type: str, key: str) -> np.ndarray:
        """Grid position of the attribute values, ``(n, 1)``."""
        schema = {k.name: k for k in SCHEMAS[machine_type]}[key]
        return dsp.column([schema.position(v) for v in self.attrs[key]], self.n)

    def uniform(self, low: float, high: float) -> np.ndarray:
        return dsp.uniform(self.rng, low, high, self.n)

    def jitter(self, std: float) -> np.ndarray:
        """Per-clip multiplicative jitter ``1 + N(0, std x spread)``, ``(n, 1)``."""
        return (1.0 + self.rng.normal(0.0, std * self.spread, size=(self.n, 1))).astype(dsp.DTYPE)

    def phase(self, freq: np.ndarray, drift_std: float = 0.004) -> np.ndarray:
        """Running phase of a slowly wandering, possibly frequency-modulated fundamental."""
        knots = max(2, int(self.n_samples / self.sr * 2))
        drift = 1.0 + dsp.smooth_random(self.rng, self.n, self.n_samples, knots,
                                        drift_std * self.spread)
        return dsp.phase_from_frequency(freq * drift * self.fm, self.n_samples, self.sr)

    def noise(self, *gains: dsp.GainFn) -> np.ndarray:
        return dsp.noise(self.rng, self.n, self.n_samples, *gains, sr=self.sr)


def _decaying(n_harm: int, decay) -> np.ndarray:
    return np.asarray(decay, dtype=dsp.DTYPE) ** np.arange(n_harm, dtype=dsp.DTYPE)


def fan(b: Batch) -> np.ndarray:
    """Rotating blades: blade-pass harmonics, shaft imbalance, AM aerodynamic broadband."""
    p = b.profile
    shaft, blades = p.uniform(16, 26), int(p.integers(5, 10))
    decay, res_hz, am = p.uniform(0.45, 0.7), p.uniform(900, 2800), p.uniform(0.25, 0.45)
    speed = 0.8 + 0.05 * b.position("fan", "m-n")
    f_s = shaft * speed * b.jitter(0.008)
    phase = b.phase(f_s)
    n_h = 6
    amps = np.tile(_decaying(n_h, decay), (b.n, 1))
    tonal = dsp.harmonic_series(phase, amps, blades * np.arange(1, n_h + 1), b.rng, f_s * blades)
    tonal += 0.25 * np.sin(phase) + 0.12 * np.sin(2 * phase + 1.0)
    air = b.noise(dsp.band(60, 7000), dsp.bump(res_hz * np.sqrt(speed), 9.0), dsp.slope(-2.0))
    air *= 1.0 + am * np.sin(blades * phase + 0.3)
    return (0.55 * dsp.unit_rms(tonal) + 0.8 * air) * speed


def gearbox(b: Batch) -> np.ndarray:
    """Gear mesh: harmonic series of the mesh frequency with shaft-rate sidebands."""
    p = b.profile
    shaft, teeth = p.uniform(11, 20), int(p.integers(18, 34))
    decay, res_hz = p.uniform(0.45, 0.7), p.uniform(1500, 4000)
    f_s = shaft * b.value("volt") / 1.5 * b.jitter(0.008)
    load = b.value("wt") / 200.0
    phase = b.phase(f_s)
    n_h = 6
    k = np.arange(n_h, dtype=dsp.DTYPE)[None, :]
    amps = decay ** k * (1.0 + 1.2 * load * k / (n_h - 1))
    mesh = dsp.harmonic_series(phase, amps, teeth * np.arange(1, n_h + 1), b.rng, f_s * teeth)
    mesh *= 1.0 + (0.15 + 0.35 * load) * np.sin(phase + 0.7)
    mesh = dsp.unit_rms(mesh)
    hum = np.sin(dsp.TWO_PI * 100.0 * b.t) + 0.4 * np.sin(phase)
    rattle = b.noise(dsp.band(100, 6000), dsp.bump(res_hz, 8.0))
    rattle *= 1.0 + 0.5 * np.abs(np.sin(0.5 * teeth * phase))
    return 0.7 * mesh + 0.15 * hum + (0.35 + 0.2 * load) * rattle


# 8-slot on/off rhythm of each valve pattern value (pat_00 ... pat_09).
_VALVE_PATTERNS = np.array([
    [1, 0, 0, 0, 1, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 1, 0, 0, 0],
    [1, 0, 0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0, 1, 0],
    [1, 0, 0, 0, 0, 0, 1, 1], [1, 1, 0, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1, 0, 0],
    [1, 1, 1, 1, 0, 1, 0, 0]], dtype=dsp.DTYPE)


def valve(b: Batch) -> np.ndarray:
    """Solenoid valve: clicks, ringing and short air bursts following the pattern's rhythm."""
    p = b.profile
    cycle, click_hz = p.uniform(0.9, 1.5), p.uniform(1200, 3200)
    ring_hz, tau = p.uniform(600, 1400), p.uniform(0.012, 0.025)
    supply_hz = p.uniform(400, 1500)
    pos = b.position("valve", "pat").astype(np.int64)[:, 0]
    cycle = cycle * (0.9 + 0.02 * pos[:, None].astype(dsp.DTYPE)) * b.jitter(0.01)
    pattern = _VALVE_PATTERNS[pos]
    density = np.sqrt(3.0 / pattern.sum(axis=1, keepdims=True))  # rhythm, not loudness, differs
    slot_len = cycle / 8.0
    u = np.mod(b.t + b.uniform(0.0, 1.0) * cycle, cycle)
    slot = np.minimum((u / slot_len).astype(np.int64), 7)
    active = np.take_along_axis(pattern, slot, axis=1) * density
    local = u - slot.astype(dsp.DTYPE) * slot_len
    click_env = active * np.exp(-local / tau)
    air_env = active * np.exp(-local / (0.6 * slot_len)) * np.minimum(local / 0.01, 1.0)
    click = b.noise(dsp.band(click_hz / 1.6, click_hz * 1.6)) * click_env
    ring = np.sin(dsp.phase_from_frequency(ring_hz * b.fm * np.ones((b.n, 1)), b.n_samples,
                                           b.sr)) * click_env
    air = b.noise(dsp.band(2000, 7500)) * air_env
    supply = b.noise(dsp.band(150, 5000), dsp.bump(supply_hz, 6.0))  # steady pneumatic supply
    hum = np.sin(dsp.TWO_PI * 100.0 * b.t) + 0.5 * np.sin(dsp.TWO_PI * 200.0 * b.t + 1.0)
    return 2.0 * (2.2 * click + 1.0 * ring + 0.6 * air) + 0.45 * supply + 0.15 * hum


def bearing(b: Batch) -> np.ndarray:
    """Rolling bearing: broadband noise, rolling-element tones and faint periodic impacts."""
    p = b.profile
    hz_per_vel, bpfo, bpfi = p.uniform(1.6, 2.4), p.uniform(3.0, 4.2), p.uniform(4.8, 6.2)
    res_hz = p.uniform(2500, 5000)
    f_s = b.value("vel") * hz_per_vel * b.jitter(0.008)
    phase = b.phase(f_s)
    mults = [1, 2, bpfo, 2 * bpfo, 3 * bpfo, bpfi, 2 * bpfi]
    amps = np.tile(np.array([0.5, 0.3, 1.0, 0.6, 0.3, 0.6, 0.3], dtype=dsp.DTYPE), (b.n, 1))
    tones = dsp.unit_rms(dsp.harmonic_series(phase, amps, mults, b.rng, f_s))
    impacts = dsp.decaying_pulses(b.t, 1.0 / (bpfo * f_s), 0.0, 0.002) * b.noise(
        dsp.band(res_hz / 1.4, res_hz * 1.4))
    broad = b.noise(dsp.band(200, 7500), dsp.slope(-1.5))
    loc = b.position("bearing", "loc")
    mix = 0.6 * tones + 0.8 * broad + 0.5 * impacts
    mix = dsp.filtered(mix, dsp.bump(1200.0 + 350.0 * loc, 7.0), dsp.slope(-3.0 + 0.8 * loc))
    return mix * (1.0 / (1.0 + 0.06 * loc)) * np.sqrt(f_s / 30.0)


def slider(b: Batch) -> np.ndarray:
    """Linear slider: strokes back and forth with friction sweeps, motor whine and end clunks."""
    p = b.profile
    stroke_mm, motor_hz, pause = p.uniform(220, 380), p.uniform(250, 500), p.uniform(0.1, 0.3)
    vel = b.value("vel") * b.jitter(0.01)
    ramp = np.clip(0.015 / b.value("ac"), 0.04, 0.45)
    dur = stroke_mm / vel
    cycle = 2 * dur / (1.0 - pause)
    c = np.mod(b.t + b.uniform(0.0, 1.0) * cycle, cycle)
    in_stroke = c < 2 * dur
    u = np.where(c < dur, c, c - dur) / dur
    s = np.where(in_stroke, np.clip(np.minimum(u, 1.0 - u) / ramp, 0.0, 1.0), 0.0)
    since = np.where(c < dur, c, np.where(in_stroke, c - dur, c - 2 * dur))
    level = vel / 600.0
    friction = (b.noise(dsp.band(300, 1000)) * s + b.noise(dsp.band(1000, 3000)) * s ** 2
                + 0.7 * b.noise(dsp.band(3000, 7000)) * s ** 3) * level
    f_m = motor_hz * vel / 600.0
    phase = dsp.phase_from_frequency(f_m * s * b.fm + 1e-3, b.n_samples, b.sr)
    whine = (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)) * s
    clunk = np.exp(-since / 0.015) * b.noise(dsp.band(300, 2000))
    return 1.35 * (1.1 * friction + 0.45 * whine + 0.9 * clunk
                   + 0.05 * b.noise(dsp.band(80, 2000)))


def pump(b: Batch) -> np.ndarray:
    """Pump: motor hum with impeller blade-pass tones plus turbulent flow noise."""
    p = b.profile
    motor_hz, blades, flow_res = p.uniform(24, 30), int(p.integers(4, 8)), p.uniform(300, 900)
    pos = b.position("pump", "flow")
    f_m = motor_hz * (0.9 + 0.025 * pos) * b.jitter(0.008)
    phase = b.phase(f_m)
    mults = [1, 2, 3, 4, blades, 2 * blades, 3 * blades]
    amps = np.tile(np.array([0.6, 0.4, 0.25, 0.15, 0.8, 0.4, 0.2], dtype=dsp.DTYPE), (b.n, 1))
    hum = dsp.unit_rms(dsp.harmonic_series(phase, amps, mults, b.rng, f_m)
                       + 0.5 * np.sin(dsp.TWO_PI * 100.0 * b.t))
    flow = b.noise(dsp.power_law(1.3), dsp.bump(flow_res * (1 + 0.05 * pos), 8.0))
    turbulence = 1.0 + dsp.smooth_random(b.rng, b.n, b.n_samples, 40, 0.25)
    return 0.7 * hum + (0.3 + 0.08 * pos) * flow * turbulence


def _toy_timbre(b: Batch, machine_type: str):
    """Per-car-model harmonic decay and brush-noise level (fixed table), ``(n, 1)`` each."""
    table = np.random.default_rng([stable_id(machine_type), 99])
    decays = table.uniform(0.45, 0.8, 10).astype(dsp.DTYPE)
    brush = table.uniform(0.1, 0.45, 10).astype(dsp.DTYPE)
    pos = b.position(machine_type, "car").astype(np.int64)
    return decays[pos], brush[pos]


def _mic(b: Batch, machine_type: str, x: np.ndarray) -> np.ndarray:
    mic = b.position(machine_type, "mic")
    return dsp.filtered(x, dsp.bump(700.0 + 600.0 * mic, 6.0), dsp.slope(-1.5 - 1.0 * mic))


def toycar(b: Batch) -> np.ndarray:
    """Toy car: DC-motor whine with brush noise plus wheel rolling noise."""
    p = b.profile
    hz_per_volt, gear = p.uniform(6.0, 9.0), p.uniform(20, 40)
    decay, brush = _toy_timbre(b, "ToyCar")
    f_m = b.value("spd") * hz_per_volt * b.jitter(0.01)
    phase = b.phase(f_m)
    n_h = 8
    amps = decay ** np.arange(n_h, dtype=dsp.DTYPE)[None, :]
    whine = dsp.unit_rms(dsp.harmonic_series(phase, amps, np.arange(1, n_h + 1), b.rng, f_m))
    brush_noise = b.noise(dsp.band(2000, 7500)) * (1.0 + 0.6 * np.sin(2 * phase))
    rolling = b.noise(dsp.band(60, 900)) * (1.0 + 0.4 * np.sin(phase / gear))
    return _mic(b, "ToyCar", 0.4 * whine + 0.65 * brush * brush_noise + 0.4 * rolling)


def toytrain(b: Batch) -> np.ndarray:
    """Toy train: motor whine, rolling noise and rail-joint clatter at a speed-dependent rate."""
    p = b.profile
    hz_per_step, joint_hz = p.uniform(25, 40), p.uniform(0.18, 0.3)
    decay, brush = _toy_timbre(b, "ToyTrain")
    spd = b.value("spd") * b.jitter(0.01)
    f_m = spd * hz_per_step
    phase = b.phase(f_m)
    n_h = 6
    amps = decay ** np.arange(n_h, dtype=dsp.DTYPE)[None, :]
    whine = dsp.unit_rms(dsp.harmonic_series(phase, amps, np.arange(1, n_h + 1), b.rng, f_m))
    period = 1.0 / (spd * joint_hz)
    offset = b.uniform(0.0, 1.0) * period
    clatter_env = (dsp.decaying_pulses(b.t, period, offset, 0.02)
                   + 0.7 * dsp.decaying_pulses(b.t, period, offset + 0.12, 0.02))
    clatter = b.noise(dsp.band(400, 3000)) * clatter_env
    rolling = b.noise(dsp.band(100, 1500))
    return _mic(b, "ToyTrain", 0.37 * whine + 0.9 * clatter + 0.37 * rolling
                + 0.75 * brush * b.noise(dsp.band(2500, 7500)))


SYNTHESISERS: dict[str, Callable[[Batch], np.ndarray]] = {
    "fan": fan, "gearbox": gearbox, "valve": valve, "bearing": bearing, "slider": slider,
    "pump": pump, "ToyCar": toycar, "ToyTrain": toytrain,
}
