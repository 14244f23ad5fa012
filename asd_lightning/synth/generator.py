"""Synthesis of batches of clips: machine sound + anomalies + factory background.

:func:`synthesize_clips` is the single entry point used by the dataset writer; it is also handy
on its own, e.g. to compare a normal and an anomalous clip with identical attributes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import dsp
from .anomalies import DriftedProfile, add_anomalies, frequency_modulation, severities
from .attributes import SCHEMAS, Attributes, stable_id
from .background import factory_background
from .difficulty import DEFAULT_DIFFICULTY, SoundModel, difficulty_preset
from .machines import SYNTHESISERS, Batch

SAMPLE_RATE = dsp.SAMPLE_RATE

# Fixed output gain per machine type (no per-clip normalisation: loudness anomalies survive).
MACHINE_GAIN = {
    "fan": 0.1, "gearbox": 0.12, "valve": 0.04, "bearing": 0.07, "slider": 0.06,
    "pump": 0.1, "ToyCar": 0.1, "ToyTrain": 0.1,
}
# Per machine type visibility of anomalies, balancing the baseline difficulty across types
# (e.g. the impulsive, highly variable valve and slider sounds mask anomalies more); the overall
# level is the difficulty's ``anomaly_level`` (difficulty.py).
ANOMALY_GAIN = {
    "fan": 1.0, "gearbox": 0.95, "valve": 1.35, "bearing": 1.0, "slider": 1.5,
    "pump": 0.7, "ToyCar": 0.8, "ToyTrain": 0.8,
}
PEAK_LIMIT = 0.98  # clips whose peak would exceed this are scaled down (clipping guard only)


def section_profile(machine_type: str, section: int) -> np.random.Generator:
    """Generator drawing the fixed character of a section (independent of the dataset seed)."""
    return np.random.default_rng([stable_id(machine_type), section, 11])


def _db_jitter(rng: np.random.Generator, n: int, std_db: float) -> np.ndarray:
    """Per-clip gain factors with a level spread of ``std_db`` dB, float32 ``(n, 1)``."""
    return (10.0 ** (rng.normal(0.0, std_db, size=(n, 1)) / 20.0)).astype(dsp.DTYPE)


def synthesize_clips(machine_type: str, section: int, domain: str,
                     attributes: Sequence[Attributes], anomalies: Sequence[str | None],
                     *, seconds: float, rng: np.random.Generator, anomaly_strength: float = 1.0,
                     domain_shift: float = 1.0, background_level: float = 0.3,
                     difficulty: str | SoundModel = DEFAULT_DIFFICULTY,
                     sr: int = SAMPLE_RATE) -> np.ndarray:
    """Synthesise ``len(attributes)`` clips of one machine type, section and domain.

    ``attributes[i]`` are clip ``i``'s (key, value) pairs; ``anomalies[i]`` is an anomaly kind
    from :data:`~asd_lightning.synth.anomalies.ANOMALY_KINDS` or ``None`` for a normal clip.
    ``difficulty``: a name of :data:`~asd_lightning.synth.difficulty.DIFFICULTIES` or a
    :class:`~asd_lightning.synth.difficulty.SoundModel` (spread of normal sounds, domain shift
    of level and background, anomaly level).
    Returns float32 audio in [-1, 1], shape ``(n, round(seconds * sr))``.
    """
    if machine_type not in SYNTHESISERS:
        raise ValueError(f"unknown machine type {machine_type!r}; known: {sorted(SYNTHESISERS)}")
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    n, n_samples = len(attributes), int(round(seconds * sr))
    if len(anomalies) != n:
        raise ValueError("attributes and anomalies must have the same length")
    if n == 0:
        return np.zeros((0, n_samples), dtype=dsp.DTYPE)
    model = difficulty_preset(difficulty) if isinstance(difficulty, str) else difficulty
    keys = [k.name for k in SCHEMAS[machine_type]]
    attrs = {key: [dict(a)[key] for a in attributes] for key in keys}

    severity = severities(rng, n, anomaly_strength * model.anomaly_level * ANOMALY_GAIN[machine_type])
    fm = frequency_modulation(rng, anomalies, severity, n_samples, sr)
    synthesise = SYNTHESISERS[machine_type]
    machine = np.empty((n, n_samples), dtype=dsp.DTYPE)
    normal = [i for i, kind in enumerate(anomalies) if kind is None]
    if normal:  # one batch; normal clips never depend on the anomaly settings
        pick = {key: [values[i] for i in normal] for key, values in attrs.items()}
        machine[normal] = synthesise(Batch(rng, len(normal), n_samples, pick,
                                           section_profile(machine_type, section), 1.0, sr,
                                           model.condition_spread))
    for i in (i for i, kind in enumerate(anomalies) if kind is not None):  # each its own unit
        profile = DriftedProfile(section_profile(machine_type, section), rng, model.drift * severity[i, 0])
        fm_i = fm[i:i + 1] if isinstance(fm, np.ndarray) else fm
        pick = {key: values[i:i + 1] for key, values in attrs.items()}
        machine[i] = synthesise(Batch(rng, 1, n_samples, pick, profile, fm_i, sr,
                                      model.condition_spread))[0]
    machine = add_anomalies(rng, machine, anomalies, severity, sr)
    machine *= _db_jitter(rng, n, model.gain_db)
    target = domain == "target"
    if model.colour_db or (target and model.target_colour_db):  # microphone placement
        tilt = rng.normal(0.0, model.colour_db, size=(n, 1)).astype(dsp.DTYPE)
        tilt += target * model.target_colour_db * domain_shift
        machine = dsp.filtered(machine, dsp.slope(tilt)).astype(dsp.DTYPE, copy=False)
    if target and model.target_gain_db:  # another microphone distance
        machine *= dsp.DTYPE(10.0 ** (model.target_gain_db * domain_shift / 20.0))

    bg = factory_background(rng, n, n_samples, domain, domain_shift, sr)
    level = background_level * model.background_gain
    if target:  # another factory: louder and less steady background
        bg_gain = level * (1.0 + model.target_background * domain_shift) * _db_jitter(
            rng, n, model.background_db + model.target_background_db * domain_shift)
    else:
        bg_gain = level * _db_jitter(rng, n, model.background_db)
    audio = MACHINE_GAIN[machine_type] * (machine + bg_gain * bg)
    peak = np.max(np.abs(audio), axis=-1, keepdims=True)
    return audio * np.minimum(1.0, PEAK_LIMIT / np.maximum(peak, 1e-12))
