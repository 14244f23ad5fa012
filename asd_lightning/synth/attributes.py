"""Operating-condition attributes: names, values, source/target split and file-name tokens.

Each machine type has one or more attribute keys, each with an ordered grid of values written
like the real DCASE data (``m-n_X``, ``volt_1.5_wt_150``, ``car_C2_spd_34V_mic_1`` ...).
Per section one key is the *domain-shift key*: the target domain uses grid values that the
source domain never uses, further away the larger the domain-shift strength.
"""

from __future__ import annotations

import itertools
import re
import zlib
from dataclasses import dataclass

import numpy as np

Attributes = tuple[tuple[str, str], ...]  # ordered (key, value) pairs of one clip

_TOKEN = re.compile(r"^[A-Za-z0-9.\-]+$")


@dataclass(frozen=True)
class AttributeKey:
    """One attribute key and its ordered grid of possible values."""

    name: str
    values: tuple[str, ...]

    def position(self, value: str) -> int:
        return self.values.index(value)


_CARS = ("A1", "A2", "B1", "B2", "C1", "C2", "D1", "D2", "E1", "E2")
_MICS = ("1", "2", "3", "4")

SCHEMAS: dict[str, tuple[AttributeKey, ...]] = {
    "fan": (AttributeKey("m-n", tuple("QRSTUVWXYZ")),),
    "gearbox": (
        AttributeKey("volt", ("0.8", "1.0", "1.2", "1.3", "1.5", "1.8", "2.0", "2.3", "2.5")),
        AttributeKey("wt", ("0", "30", "50", "80", "100", "130", "150", "180", "200", "230")),
    ),
    "bearing": (
        AttributeKey("vel", ("6", "8", "9", "10", "12", "14", "16", "18", "21", "24", "28")),
        AttributeKey("loc", tuple("ABCDEFGH")),
    ),
    "slider": (
        AttributeKey("vel", ("300", "380", "450", "490", "500", "560", "620", "680", "730",
                             "800", "900")),
        AttributeKey("ac", ("0.03", "0.05", "0.08", "0.11", "0.14", "0.18", "0.22", "0.26",
                            "0.30", "0.40")),
    ),
    "valve": (AttributeKey("pat", tuple(f"{i:02d}" for i in range(10))),),
    "pump": (AttributeKey("flow", ("2", "4", "6", "8", "10", "12", "14", "16", "18")),),
    "ToyCar": (
        AttributeKey("car", _CARS),
        AttributeKey("spd", ("25V", "28V", "31V", "34V", "37V", "40V", "43V")),
        AttributeKey("mic", _MICS),
    ),
    "ToyTrain": (
        AttributeKey("car", _CARS),
        AttributeKey("spd", ("5", "6", "7", "8", "9", "10", "11", "12")),
        AttributeKey("mic", _MICS),
    ),
}


def stable_id(text: str) -> int:
    """A process-independent integer for ``text`` (Python's ``hash`` is salted)."""
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class DomainAttributes:
    """The attribute combinations used by one section in each domain."""

    shift_key: str
    source: tuple[Attributes, ...]
    target: tuple[Attributes, ...]

    def for_domain(self, domain: str) -> tuple[Attributes, ...]:
        return self.source if domain == "source" else self.target


def section_attributes(machine_type: str, section: int, domain_shift: float) -> DomainAttributes:
    """Choose source and target attribute combinations for one section.

    The choice depends on the machine type, the section and the shift strength only (not on
    the dataset seed), like a fixed recording setup.
    """
    keys = SCHEMAS[machine_type]
    rng = np.random.default_rng([stable_id(machine_type), section, 7])
    shift_index = section % len(keys)
    src_values: list[list[str]] = []
    tgt_values: list[list[str]] = []
    for i, key in enumerate(keys):
        grid = len(key.values)
        if i == shift_index:
            n_src = 2
            start = int(rng.integers(0, max(1, grid // 3)))
            src = list(range(start, start + n_src))
            gap = max(1, int(round(0.9 * domain_shift)))
            first = min(src[-1] + gap, grid - 2)
            if first <= src[-1]:  # grid too short above: go below the source values
                first = max(0, src[0] - gap - 1)
            tgt = [p for p in (first, first + 1) if p not in src and 0 <= p < grid]
            src_values.append([key.values[p] for p in src])
            tgt_values.append([key.values[p] for p in tgt])
        else:
            n_fixed = 2 if len(keys) == 2 else 1
            picks = sorted(rng.choice(grid, size=n_fixed, replace=False).tolist())
            src_values.append([key.values[p] for p in picks])
            tgt_values.append([key.values[picks[0]]])
    names = [k.name for k in keys]
    source = tuple(tuple(zip(names, combo)) for combo in itertools.product(*src_values))
    target = tuple(tuple(zip(names, combo)) for combo in itertools.product(*tgt_values))
    return DomainAttributes(keys[shift_index].name, source, target)


def attribute_suffix(machine_type: str, attributes: Attributes, year: int) -> str:
    """The file-name tokens after the clip index (without the leading ``_``).

    2022 and later: ``key_value`` pairs. 2021: free tokens in the style of that year's data.
    """
    values = dict(attributes)
    if year == 2021 and machine_type in ("ToyCar", "ToyTrain"):
        tokens = [f"{values['car']}Spd{values['spd']}Mic{values['mic']}"]
    elif year == 2021 and machine_type == "fan":
        strength = SCHEMAS["fan"][0].position(values["m-n"]) + 1
        tokens = ["strength", str(strength), "ambient"]
    else:
        tokens = [tok for pair in attributes for tok in pair]
    for tok in tokens:
        if not _TOKEN.match(tok):
            raise ValueError(f"invalid attribute token {tok!r}")
    return "_".join(tokens)


def numeric(value: str) -> float:
    """The number inside an attribute value such as ``'34V'`` or ``'0.08'``."""
    return float(re.sub(r"[^0-9.]", "", value))
