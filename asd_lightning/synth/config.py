"""Configuration of the synthetic dataset (:class:`SynthConfig`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .difficulty import DEFAULT_DIFFICULTY, difficulty_preset
from .years import default_machine_types, synth_machine_types

SAMPLE_RATE = 16_000

SYNTH_YEARS = (2021, 2022, 2023, 2024, 2025, 2026)
MACHINE_TYPES_BY_YEAR: dict[int, tuple[str, ...]] = {y: synth_machine_types(y) for y in SYNTH_YEARS}


def layout_year(year: int) -> int:
    """File layout used for ``year``: 2021, or 2022 for 2022 and later."""
    if year not in SYNTH_YEARS:
        raise ValueError(f"year {year} is not supported (one of {', '.join(map(str, SYNTH_YEARS))})")
    return 2021 if year == 2021 else 2022


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise. The defaults make the small demo dataset.

    Clip counts are per section (training) and per (section, domain, label) (test), like the
    DCASE data; :meth:`full_size` gives the real DCASE 2022 sizes.
    """

    year: int = 2022                      # 2021 or 2022 layout; 2023-2026 use the 2022 layout
    machine_types: tuple[str, ...] | None = None  # None: fan, gearbox, valve (2026: gearboxEmu, valveEmu)
    dev_sections: tuple[int, ...] | None = None   # None: 00-02 (2021, 2022); 00 (2023 on, one section)
    eval_sections: tuple[int, ...] | None = None  # None: 03; 01 from 2023 on; empty: no evaluation data
    source_train_clips: int = 24          # per section
    target_train_clips: int = 3           # per section (DCASE: 990 source vs 10 target)
    test_clips: int = 8                   # per (section, domain, label)
    clip_seconds: float = 4.0
    seed: int = 0
    anomaly_strength: float = 1.0         # scales every anomaly kind (0 = anomalies silent)
    domain_shift: float = 1.0             # distance of target attributes / background change
    background_level: float = 0.3         # factory noise RMS relative to the machine sound
    difficulty: str = DEFAULT_DIFFICULTY  # sound model preset (difficulty.py): realistic or easy
    supplemental_clips: int = 2           # per machine type and kind (years with supplemental/)

    def __post_init__(self):
        if self.machine_types is None:
            object.__setattr__(self, "machine_types", default_machine_types(int(self.year)))
        one_section = int(self.year) >= 2023  # 2023 on: section 00 per machine type
        if self.dev_sections is None:
            object.__setattr__(self, "dev_sections", (0,) if one_section else (0, 1, 2))
        if self.eval_sections is None:
            object.__setattr__(self, "eval_sections", (1,) if one_section else (3,))
        for name in ("machine_types", "dev_sections", "eval_sections"):
            value = getattr(self, name)
            if isinstance(value, (str, int)):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "machine_types", tuple(str(m) for m in self.machine_types))
        object.__setattr__(self, "dev_sections", tuple(int(s) for s in self.dev_sections))
        object.__setattr__(self, "eval_sections", tuple(int(s) for s in self.eval_sections))
        for name in ("year", "source_train_clips", "target_train_clips", "test_clips", "seed",
                     "supplemental_clips"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("clip_seconds", "anomaly_strength", "domain_shift", "background_level"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "difficulty", str(self.difficulty))
        self._validate()

    def _validate(self) -> None:
        layout_year(self.year)
        allowed = synth_machine_types(self.year)
        if not self.machine_types:
            raise ValueError("machine_types must not be empty")
        for machine in self.machine_types:
            if machine not in allowed:
                raise ValueError(f"unknown machine type {machine!r} for {self.year}; "
                                 f"choose from {', '.join(allowed)}")
        if len(set(self.machine_types)) != len(self.machine_types):
            raise ValueError("machine_types contains duplicates")
        sections = self.dev_sections + self.eval_sections
        if not self.dev_sections:
            raise ValueError("dev_sections must not be empty")
        if any(not 0 <= s <= 99 for s in sections) or len(set(sections)) != len(sections):
            raise ValueError("sections must be distinct integers 0..99 (dev and eval disjoint)")
        for name in ("source_train_clips", "target_train_clips", "test_clips", "supplemental_clips"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.source_train_clips + self.target_train_clips < 1:
            raise ValueError("at least one training clip per section is needed")
        if not 0.1 <= float(self.clip_seconds) <= 60.0:
            raise ValueError("clip_seconds must be between 0.1 and 60")
        for name in ("anomaly_strength", "domain_shift", "background_level"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        difficulty_preset(self.difficulty)  # unknown names: a clear ValueError

    @property
    def layout_year(self) -> int:
        return layout_year(self.year)

    @property
    def n_samples(self) -> int:
        return int(round(self.clip_seconds * SAMPLE_RATE))

    @classmethod
    def full_size(cls, **overrides: Any) -> "SynthConfig":
        """DCASE 2022 sizes: 10 s clips, 990 + 10 training and 50 + 50 test clips per domain."""
        sizes = dict(source_train_clips=990, target_train_clips=10, test_clips=50,
                     clip_seconds=10.0)
        return cls(**{**sizes, **overrides})

    def replace(self, **overrides: Any) -> "SynthConfig":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown SynthConfig field(s): {', '.join(sorted(unknown))}")
        if "year" in overrides:  # fields at the old year's defaults take the new year's defaults
            old = type(self)(year=self.year)
            for name in ("machine_types", "dev_sections", "eval_sections"):
                if name not in overrides and getattr(self, name) == getattr(old, name):
                    overrides[name] = None
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SynthConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
