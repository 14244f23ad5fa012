"""What the synthetic dataset of each DCASE year holds beyond the 2022 layout (year facts as data).

* machine types: the year's development machine types that have a sound model; a 2026
  ``<type>Emu`` machine type sounds like ``<type>`` (:func:`sound_model`);
* hidden attributes (2024 on): the machine types whose clip names carry no attributes, and the
  token written instead (``noAttribute`` in 2024/2025 as in the official correspondence files,
  the empty string of ``..._0000_.wav`` in 2026 as in the official baseline's README); the
  writer adds the attribute correspondence files that reveal them;
* supplemental clips (2025 on: the year's ``supplemental`` split folder): clean machine and
  noise-only recordings (:mod:`.supplemental`);
* stereo (2026: the year's ``channels``): near microphone left, far microphone right (:mod:`.stereo`);
* evaluation labels (2023 on): ``ground_truth/eval_data_list_<year>.csv`` (anonymised name →
  full name), as the official baseline ships them; 2022: the evaluator's ground-truth CSVs.
"""

from __future__ import annotations

from asd_lightning.data.years import year_facts

from .machines import SYNTHESISERS

# year -> (machine types written without attributes, the token written instead)
HIDDEN_ATTRIBUTES: dict[int, tuple[tuple[str, ...], str]] = {
    2024: (("gearbox", "slider", "ToyTrain"), "noAttribute"),
    2025: (("bearing", "slider", "ToyTrain"), "noAttribute"),
    2026: (("bearingEmu", "sliderEmu", "ToyCar"), ""),
}
DEFAULT_MACHINE_TYPES = ("fan", "gearbox", "valve")


def sound_model(machine_type: str) -> str:
    """The synthesiser of a machine type (``bearingEmu`` sounds like ``bearing``)."""
    if machine_type in SYNTHESISERS:
        return machine_type
    return machine_type[:-3] if machine_type.endswith("Emu") else machine_type


def synth_machine_types(year: int) -> tuple[str, ...]:
    """Machine types the synthetic dataset of ``year`` can hold."""
    if year == 2021:  # the 2021 sound set includes pump
        return ("fan", "gearbox", "pump", "slider", "valve", "ToyCar", "ToyTrain")
    return tuple(m for m in year_facts(year).dev if sound_model(m) in SYNTHESISERS)


def default_machine_types(year: int) -> tuple[str, ...]:
    """Three machine types of ``year`` (fan, gearbox, valve up to 2025; their 2026 names)."""
    allowed = synth_machine_types(year)
    return tuple(next(m for m in allowed if sound_model(m) == base) for base in DEFAULT_MACHINE_TYPES)


def hidden_attribute_token(year: int, machine_type: str) -> str | None:
    """The token written instead of the attributes of ``machine_type`` in ``year``, or None."""
    machines, token = HIDDEN_ATTRIBUTES.get(min(year, max(HIDDEN_ATTRIBUTES)), ((), ""))
    return token if year >= min(HIDDEN_ATTRIBUTES) and machine_type in machines else None


def has_supplemental(year: int) -> bool:
    return "supplemental" in year_facts(year).splits.values()


def is_stereo(year: int) -> bool:
    return bool(year_facts(year).channels)
