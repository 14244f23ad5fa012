"""DCASE file names, folders and ground-truth files of the synthetic dataset.

:func:`plan_clips` lists every clip of a dataset (where it goes, what it contains) without
synthesising anything; :func:`write_ground_truth` writes the evaluation labels in the official
evaluators' CSV format. Layouts (``XX`` section, ``NNNN`` clip index per (section, domain,
split, label), ``<attrs>`` attribute tokens):

2022 and later::

    dev_data/<machine>/train/section_XX_<domain>_train_normal_NNNN_<attrs>.wav
    dev_data/<machine>/test/section_XX_<domain>_test_<label>_NNNN_<attrs>.wav
    eval_data/<machine>/train/...                       (as dev training clips)
    eval_data/<machine>/test/section_XX_NNNN.wav        (anonymised, shuffled)
    ground_truth/ground_truth_data/ground_truth_<machine>_section_XX_test.csv    (1 = anomaly)
    ground_truth/ground_truth_domain/ground_truth_<machine>_section_XX_test.csv  (1 = target)

2023 and later: as 2022 with ``ground_truth/eval_data_list_<year>.csv`` (machine-name lines, then
``anonymised name,full name`` rows) instead of the evaluator CSVs; machine types with hidden
attributes (:mod:`.years`) are named ``..._NNNN_noAttribute.wav`` (2024, 2025) or ``..._NNNN_.wav``
(2026), their attributes in
``ground_truth/ground_truth_attributes/<dataset>_data/<machine>/attributes_XX_<split>_correspondence.csv``;
2025 on add ``<machine>/supplemental/`` (:mod:`.supplemental`), 2026 writes stereo files (:mod:`.stereo`).

2021::

    dev_data/<machine>/train/section_XX_<domain>_train_normal_NNNN_<attrs>.wav
    dev_data/<machine>/<domain>_test/section_XX_<domain>_test_<label>_NNNN.wav
    eval_data/<machine>/<domain>_test/section_XX_<domain>_test_NNNN.wav  (anonymised, shuffled)
    ground_truth/ground_truth_<machine>_section_XX_<domain>_test.csv
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from .anomalies import ANOMALY_KINDS
from .attributes import Attributes, attribute_suffix, section_attributes, stable_id
from .config import SynthConfig, layout_year
from .years import hidden_attribute_token, sound_model

DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
MANAGED_ENTRIES = ("dev_data", "eval_data", "ground_truth", "synth_config.json", "README.txt")


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the dataset: where it is written and what it contains."""

    relpath: str             # path relative to the dataset root (POSIX separators)
    dataset: str             # "dev" or "eval"
    machine_type: str
    section: int
    domain: str              # "source" or "target"
    split: str               # "train" or "test"
    label: str               # "normal" or "anomaly"
    index: int               # DCASE clip index within (section, domain, split, label)
    attributes: Attributes
    anomaly: str | None      # anomaly kind, None for normal clips

    @property
    def group(self) -> tuple[str, int, str, str, str]:
        """Clips of one group are synthesised together (same machine, section, domain...)."""
        return (self.machine_type, self.section, self.domain, self.split, self.label)


def _named_stem(section: int, domain: str, split: str, label: str, index: int) -> str:
    return f"section_{section:02d}_{domain}_{split}_{label}_{index:04d}"


def full_name(clip: "ClipSpec", year: int) -> str:
    """The clip's name with its attributes (the name on disk of a named development clip)."""
    stem = _named_stem(clip.section, clip.domain, clip.split, clip.label, clip.index)
    return f"{stem}_{attribute_suffix(sound_model(clip.machine_type), clip.attributes, year)}.wav"


def _suffix(machine: str, attributes: Attributes, year: int) -> str:
    token = hidden_attribute_token(year, machine)
    return token if token is not None else attribute_suffix(sound_model(machine), attributes, year)


def _test_counts(config: SynthConfig) -> dict[tuple[str, str], int]:
    return {(d, lab): config.test_clips for d in DOMAINS for lab in LABELS}


def _section_clips(config: SynthConfig, machine: str, section: int, dataset: str) -> list[ClipSpec]:
    year = config.layout_year
    attrs = section_attributes(sound_model(machine), section, config.domain_shift)
    root = f"{dataset}_data/{machine}"
    clips: list[ClipSpec] = []
    train_counts = {"source": config.source_train_clips, "target": config.target_train_clips}
    for domain in DOMAINS:
        combos = attrs.for_domain(domain)
        for i in range(train_counts[domain]):
            a = combos[i % len(combos)]
            name = (f"{_named_stem(section, domain, 'train', 'normal', i)}_"
                    f"{_suffix(machine, a, config.year)}.wav")
            clips.append(ClipSpec(f"{root}/train/{name}", dataset, machine, section, domain,
                                  "train", "normal", i, a, None))
    test: list[ClipSpec] = []
    for (domain, label), count in _test_counts(config).items():
        combos = attrs.for_domain(domain)
        for i in range(count):
            a = combos[i % len(combos)]
            kind = ANOMALY_KINDS[(i + section) % len(ANOMALY_KINDS)] if label == "anomaly" else None
            stem = _named_stem(section, domain, "test", label, i)
            if year == 2021:
                path = f"{root}/{domain}_test/{stem}.wav"
            else:
                path = f"{root}/test/{stem}_{_suffix(machine, a, config.year)}.wav"
            test.append(ClipSpec(path, dataset, machine, section, domain, "test", label, i, a, kind))
    if dataset == "eval":
        test = _anonymise(config, machine, section, test)
    return clips + test


def _anonymise(config: SynthConfig, machine: str, section: int,
               clips: list[ClipSpec]) -> list[ClipSpec]:
    """Rename evaluation test clips with shuffled numbers that hide label (and domain)."""
    rng = np.random.default_rng([config.seed, stable_id(machine), section, 31])
    root = f"eval_data/{machine}"
    if config.layout_year == 2021:
        pools = {d: [c for c in clips if c.domain == d] for d in DOMAINS}
    else:
        pools = {None: clips}
    renamed = []
    for domain, pool in pools.items():
        order = rng.permutation(len(pool))
        for clip, number in zip(pool, order):
            if domain is None:
                path = f"{root}/test/section_{section:02d}_{number:04d}.wav"
            else:
                path = f"{root}/{domain}_test/section_{section:02d}_{domain}_test_{number:04d}.wav"
            renamed.append(replace(clip, relpath=path))
    return renamed


def plan_clips(config: SynthConfig) -> list[ClipSpec]:
    """Every clip of the dataset, development sections first, in a fixed order."""
    clips: list[ClipSpec] = []
    for machine in config.machine_types:
        for section in config.dev_sections:
            clips += _section_clips(config, machine, section, "dev")
        for section in config.eval_sections:
            clips += _section_clips(config, machine, section, "eval")
    return clips


def ground_truth_rows(clips: Iterable[ClipSpec], year: int) -> dict[str, list[tuple[str, int | str]]]:
    """Ground-truth CSV path (relative) -> sorted ``(file name, 0/1 or full name)`` rows for eval
    clips (2023 on: one ``eval_data_list_<year>.csv`` of machine blocks, ``(machine, "")`` rows
    heading each block), plus the attribute correspondence files of hidden-attribute clips."""
    files: dict[str, list[tuple[str, int | str]]] = defaultdict(list)
    clips = list(clips)
    for c in clips:
        name = c.relpath.rsplit("/", 1)[1]
        anonymised = c.dataset == "eval" and c.split == "test"
        if hidden_attribute_token(year, c.machine_type) is not None and not anonymised:
            files[f"ground_truth/ground_truth_attributes/{c.dataset}_data/{c.machine_type}/"
                  f"attributes_{c.section:02d}_{c.split}_correspondence.csv"].append((full_name(c, year), name))
    for c in clips:
        if c.dataset != "eval" or c.split != "test":
            continue
        name = c.relpath.rsplit("/", 1)[1]
        is_anomaly = int(c.label == "anomaly")
        if year >= 2023:
            files[f"ground_truth/eval_data_list_{year}.csv"].append((c.machine_type, name, full_name(c, year)))
        elif layout_year(year) == 2021:
            files[f"ground_truth/ground_truth_{c.machine_type}_section_{c.section:02d}_"
                  f"{c.domain}_test.csv"].append((name, is_anomaly))
        else:
            stem = f"ground_truth_{c.machine_type}_section_{c.section:02d}_test.csv"
            files[f"ground_truth/ground_truth_data/{stem}"].append((name, is_anomaly))
            files[f"ground_truth/ground_truth_domain/{stem}"].append(
                (name, int(c.domain == "target")))
    out: dict[str, list] = {}
    for path, rows in files.items():
        if path.endswith("correspondence.csv"):
            out[path] = [("source_file_name", "target_file_name")] + sorted(rows)
        elif len(rows[0]) == 3:  # machine blocks
            out[path] = [row for machine in dict.fromkeys(r[0] for r in rows)
                         for row in [(machine,)] + sorted(r[1:] for r in rows if r[0] == machine)]
        else:
            out[path] = sorted(rows)
    return out


def write_ground_truth(root: Path, clips: Iterable[ClipSpec], year: int) -> list[Path]:
    """Write the evaluation ground-truth CSVs (no header, ``name,0|1`` rows; 2023 on an
    ``eval_data_list_<year>.csv``) and the attribute correspondence files."""
    written = []
    for rel, rows in ground_truth_rows(clips, year).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows), encoding="utf-8")
        written.append(path)
    return written
