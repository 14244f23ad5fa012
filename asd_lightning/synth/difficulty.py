"""Difficulty presets of the synthetic sound model (``SynthConfig.difficulty``).

A preset is a :class:`SoundModel`: how much a section's normal sound varies from clip to clip,
how far the target domain moves away from the source domain in level and background, and how
loud anomalies are. ``easy`` is the set the toolkit shipped first (clip-level log-mel
statistics separate its anomalies well: the training-free floor scores ~83 official);
``realistic`` (the default) is calibrated against the methods with published real-data figures
only, the training-free floor (about 55-65 official on the DCASE 2022 development set) and the
official AE baseline (52.61), see docs/synthetic.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SoundModel:
    """The knobs behind a difficulty (levels in dB are standard deviations across clips)."""

    condition_spread: float  # x the per-clip spread of the operating point (speed, cycle, drift)
    gain_db: float           # per-clip recording gain of the machine sound
    colour_db: float         # per-clip spectral tilt of the machine sound, dB per octave (mic placement)
    background_db: float     # per-clip background level, source domain
    background_gain: float   # x the background level (config.background_level) in both domains
    target_background: float  # target background level x (1 + this x domain_shift)
    target_background_db: float  # extra per-clip background level spread in the target, x domain_shift
    target_gain_db: float    # machine level change in the target domain, x domain_shift (another mic distance)
    target_colour_db: float  # machine spectral tilt in the target domain, dB/octave x domain_shift
    anomaly_level: float     # overall anomaly level (x anomaly_strength x the machine type's gain)
    drift: float             # parameter drift of an anomalous unit, fraction of range per severity


DIFFICULTIES: dict[str, SoundModel] = {
    # the original set: steady recording conditions, loud anomalies
    "easy": SoundModel(condition_spread=1.0, gain_db=0.5, colour_db=0.0, background_db=1.5,
                       background_gain=1.0, target_background=0.4, target_background_db=0.9,
                       target_gain_db=0.0, target_colour_db=0.0, anomaly_level=1.4, drift=0.05),
    # recording gain, microphone colour and operating point vary within a section; the target
    # domain is recorded elsewhere (other level, colour and a louder, less steady factory);
    # anomalies change the band statistics by less than this normal spread
    "realistic": SoundModel(condition_spread=3.0, gain_db=1.0, colour_db=0.5, background_db=2.0,
                            background_gain=1.25, target_background=0.4, target_background_db=3.0,
                            target_gain_db=0.0, target_colour_db=-0.5, anomaly_level=1.0,
                            drift=0.04),
}
DEFAULT_DIFFICULTY = "realistic"


def difficulty_preset(difficulty: str) -> SoundModel:
    """The :class:`SoundModel` of a difficulty name; a clear error for unknown names."""
    try:
        return DIFFICULTIES[difficulty]
    except KeyError:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose from "
                         f"{', '.join(DIFFICULTIES)}") from None
