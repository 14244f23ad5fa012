"""Supplemental recordings (DCASE 2025): clean machine clips and noise-only clips.

Per machine type, ``<dataset>_data/<machine>/supplemental/`` holds ``supplemental_clips``
clips ``section_00_machine_NNNN_.wav`` (the machine with no factory background, source-domain
attributes) and as many ``section_00_noise_NNNN_.wav`` (the source-domain factory background
alone, at the level it has in the training clips), numbered from 0001 as in the official data.
"""

from __future__ import annotations

import numpy as np

from .attributes import section_attributes, stable_id
from .background import factory_background
from .config import SAMPLE_RATE, SynthConfig
from .difficulty import difficulty_preset
from .generator import MACHINE_GAIN, synthesize_clips
from .years import has_supplemental, sound_model

KINDS = ("machine", "noise")


def supplemental_clips(config: SynthConfig) -> dict[str, np.ndarray]:
    """Relative path -> float audio of every supplemental clip of ``config`` (none for years
    without supplemental recordings)."""
    if not has_supplemental(config.year) or config.supplemental_clips == 0:
        return {}
    out: dict[str, np.ndarray] = {}
    n, samples = config.supplemental_clips, config.n_samples
    section = config.dev_sections[0]
    for machine in config.machine_types:
        sound = sound_model(machine)
        rng = np.random.default_rng([config.seed, stable_id(machine), section, 53])
        combos = section_attributes(sound, section, config.domain_shift).source
        machine_audio = synthesize_clips(sound, section, "source", [combos[i % len(combos)] for i in range(n)],
                                         [None] * n, seconds=config.clip_seconds, rng=rng,
                                         domain_shift=config.domain_shift, background_level=0.0,
                                         difficulty=config.difficulty, sr=SAMPLE_RATE)
        noise = factory_background(rng, n, samples, "source", config.domain_shift, SAMPLE_RATE)
        # the level the background has in the training clips (generator.py: the difficulty's gain)
        noise = MACHINE_GAIN[sound] * config.background_level * difficulty_preset(config.difficulty).background_gain * noise
        noise *= np.minimum(1.0, 0.98 / np.maximum(np.abs(noise).max(axis=-1, keepdims=True), 1e-12))
        for kind, audio in zip(KINDS, (machine_audio, noise)):
            for i, clip in enumerate(audio, start=1):
                out[f"dev_data/{machine}/supplemental/section_{section:02d}_{kind}_{i:04d}_.wav"] = clip
    return out
