"""Each DCASE Task 2 year's facts, read from ``dcase_years.yaml`` (data, not code).

:func:`year_facts` gives a :class:`YearFacts`: the naming rules (``layout``), the scoring rules
(``scoring``), the split folders of a machine-type folder, the channel names of its WAV files,
the attribute-less name tokens and the development / evaluation machine types. A year after the
last one listed uses the last year's facts (new machine types are read from any folder name).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

FACTS_FILE = Path(__file__).with_name("dcase_years.yaml")


@dataclass(frozen=True)
class YearFacts:
    year: int
    layout: int
    scoring: int
    splits: dict[str, str]                  # folder below <machine>/ -> split it holds
    dev: tuple[str, ...]
    eval: tuple[str, ...]
    channels: dict[str, int]                # channel name -> index ({} for mono data)
    default_channel: str | None
    no_attribute: tuple[str, ...]

    @property
    def machine_types(self) -> tuple[str, ...]:
        """Development then evaluation machine types (each once)."""
        return tuple(dict.fromkeys(self.dev + self.eval))


@lru_cache(maxsize=None)
def _table() -> dict[int, dict]:
    return {int(k): v for k, v in yaml.safe_load(FACTS_FILE.read_text()).items()}


def known_years() -> list[int]:
    return sorted(_table())


@lru_cache(maxsize=None)
def year_facts(year: int) -> YearFacts:
    """The facts of challenge ``year`` (2020 on; later years reuse the last year listed)."""
    table = _table()
    year = int(year)
    if year < min(table):
        raise ValueError(f"DCASE Task 2 layouts start in {min(table)}, got year {year}")
    raw = table[min(year, max(table))]
    return YearFacts(year=year, layout=int(raw["layout"]), scoring=int(raw["scoring"]),
                     splits=dict(raw["splits"]), dev=tuple(raw["dev"]), eval=tuple(raw["eval"]),
                     channels=dict(raw.get("channels") or {}), default_channel=raw.get("default_channel"),
                     no_attribute=tuple(raw.get("no_attribute") or ()))
