"""Embedded synthetic DCASE Task 2 dataset (machine sounds with anomalies and domain shift).

>>> from asd_lightning.synth import write_synthetic_dataset
>>> root = write_synthetic_dataset("data/synth")            # small demo dataset, seconds
>>> root = write_synthetic_dataset("data/full", SynthConfig.full_size(), year=2021)

The files follow the real DCASE 2021-2026 layouts (see :mod:`.layout` and :mod:`.years`:
hidden attributes from 2024, supplemental clips in 2025, stereo near/far clips in 2026); the
sound model's difficulty (``realistic`` by default, ``easy`` for fast tests) is :mod:`.difficulty`;
:mod:`.calibration` holds a simple baseline detector used to check the difficulty.
Command line: ``asd-synth --out DIR`` (see :mod:`.cli`).
"""

from .anomalies import ANOMALY_KINDS
from .attributes import SCHEMAS, section_attributes
from .config import MACHINE_TYPES_BY_YEAR, SAMPLE_RATE, SynthConfig
from .difficulty import DIFFICULTIES, SoundModel
from .generator import synthesize_clips
from .layout import ClipSpec, plan_clips
from .writer import (ensure_synthetic_dataset, is_synthetic_dataset, matches_synthetic_dataset,
                     read_dataset_config, write_synthetic_dataset)

__all__ = [
    "ANOMALY_KINDS", "DIFFICULTIES", "MACHINE_TYPES_BY_YEAR", "SAMPLE_RATE", "SCHEMAS", "ClipSpec", "SoundModel", "SynthConfig",
    "ensure_synthetic_dataset", "is_synthetic_dataset", "matches_synthetic_dataset", "plan_clips", "read_dataset_config",
    "section_attributes", "synthesize_clips", "write_synthetic_dataset",
]
