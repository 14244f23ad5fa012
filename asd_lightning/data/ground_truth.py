"""Official ground-truth CSVs for anonymised evaluation clips.

Accepted files (a single CSV or a folder searched recursively):

* 2022+: ``ground_truth_<machine>_section_<XX>_test.csv`` with rows ``file,label``
  (1 = anomaly), and, in a folder named ``ground_truth_domain``, files of the same name with
  rows ``file,domain`` (0 = source, 1 = target), as in the official 2022 evaluator.
* 2021: ``ground_truth_<machine>_section_<XX>_<source|target>_test.csv`` rows ``file,label``;
  the domain comes from the file name.
* 2020: ``eval_data_list.csv``-style files where a line holding only a machine name starts
  that machine's ``file,label`` rows.
* 2023 on: the same machine-name blocks with ``anonymised name,full name`` rows
  (``eval_data_list_2025.csv``: ``section_00_0000.wav,section_00_target_test_anomaly_0012_id_C1.wav``),
  or ``ground_truth_<machine>_section_<XX>_test.csv`` with full names in the second column (the
  2024 evaluator's ``ground_truth_attributes/``): the full name gives label, domain and attributes.
* Attribute correspondence files ``attributes_<XX>_<train|test>_correspondence.csv`` in a folder
  named after the machine type (header ``source_file_name,target_file_name``: the name with
  attributes, the ``noAttribute`` name on disk) give clips their hidden attributes.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

_NAME = re.compile(
    r"ground_truth_(?P<machine>[^_]+)_(?P<unit>section|id)_(?P<section>\d{2})(?:_(?P<domain>source|target))?_test\.csv"
)
_CORRESPONDENCE = re.compile(r"attributes_\d{2}_(?:train|test)_correspondence\.csv")
_FULL_NAME = re.compile(
    r"section_\d{2}_(?P<domain>source|target)_(?:train|test)_(?P<label>normal|anomaly)_\d+(?:_(?P<attrs>.*))?"
)
LABELS = {0: "normal", 1: "anomaly"}
DOMAINS = {0: "source", 1: "target"}


class GroundTruthError(ValueError):
    """A ground-truth CSV is malformed or disagrees with the dataset."""


@dataclass
class GroundTruth:
    """Labels and domains of evaluation clips, keyed by ``(machine, file name)``."""

    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    domains: dict[tuple[str, str], str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)  # attribute string of a clip

    def apply(self, index: pd.DataFrame) -> pd.DataFrame:
        """Fill ``unknown`` labels/domains of ``index`` rows and hidden attributes (anonymised or
        ``noAttribute`` names); conflicting labels raise."""
        from asd_lightning.data.clip_index import parse_attributes

        index = index.copy()
        keys = list(zip(index["machine"], index["file"]))
        if self.attributes and len(index):
            found = [self.attributes.get(k) for k in keys]
            index["attribute_string"] = [f if f is not None else a for a, f in zip(index["attribute_string"], found)]
            index["attributes"] = [parse_attributes(a) if f is not None else d
                                   for a, f, d in zip(index["attribute_string"], found, index["attributes"])]
        labels = [self.labels.get(k) for k in keys]
        domains = [self.domains.get(k) for k in keys]
        for i, (row_label, gt_label) in enumerate(zip(index["label"], labels)):
            if gt_label is not None and row_label != "unknown" and row_label != gt_label:
                raise GroundTruthError(
                    f"{index['path'].iat[i]}: ground truth says {gt_label} but the file name says {row_label}"
                )
        index["label"] = [g if l == "unknown" and g is not None else l for l, g in zip(index["label"], labels)]
        index["domain"] = [g if d == "unknown" and g is not None else d for d, g in zip(index["domain"], domains)]
        return index


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]


def _code(value: str, mapping: dict[int, str], path: Path, line: int, what: str) -> str:
    try:
        return mapping[int(float(value))]
    except (ValueError, KeyError):
        raise GroundTruthError(f"{path}, line {line}: {what} must be one of {sorted(mapping)}, got {value!r}") from None


def _read_labels(path: Path, machine: str, gt: GroundTruth, domain: str | None) -> None:
    for line, row in enumerate(_rows(path), start=1):
        if len(row) < 2:
            raise GroundTruthError(f"{path}, line {line}: expected 'file,label', got {row}")
        _read_row(path, line, machine, row, gt)
        if domain is not None:
            gt.domains[(machine, row[0].strip())] = domain


def _read_domains(path: Path, machine: str, gt: GroundTruth) -> None:
    for line, row in enumerate(_rows(path), start=1):
        if len(row) < 2:
            raise GroundTruthError(f"{path}, line {line}: expected 'file,domain', got {row}")
        gt.domains[(machine, row[0].strip())] = _code(row[1], DOMAINS, path, line, "domain")


def _read_full_name(path: Path, line: int, machine: str, name: str, full: str, gt: GroundTruth) -> None:
    """``name`` (anonymised) is the clip ``full`` (``section_00_<domain>_test_<label>_NNNN_<attrs>[.wav]``)."""
    stem = full[:-4] if full.lower().endswith(".wav") else full
    match = _FULL_NAME.fullmatch(stem)
    if match is None:
        raise GroundTruthError(f"{path}, line {line}: expected a label (0/1) or a full DCASE file name, got {full!r}")
    key = (machine, name)
    gt.labels[key], gt.domains[key] = match["label"], match["domain"]
    gt.attributes[key] = match["attrs"] or ""


def _read_row(path: Path, line: int, machine: str, row: list[str], gt: GroundTruth) -> None:
    value = row[1].strip()
    if value.lower().startswith("section_") or value.lower().endswith(".wav"):
        _read_full_name(path, line, machine, row[0].strip(), value, gt)
    else:
        gt.labels[(machine, row[0].strip())] = _code(value, LABELS, path, line, "label")


def _read_machine_blocks(path: Path, gt: GroundTruth) -> None:
    machine = None
    for line, row in enumerate(_rows(path), start=1):
        if len(row) == 1 or (len(row) > 1 and not any(c.strip() for c in row[1:])):
            machine = row[0].strip()
            continue
        if machine is None:
            raise GroundTruthError(f"{path}, line {line}: a machine-name line must come before the rows")
        _read_row(path, line, machine, row, gt)


def _read_correspondence(path: Path, gt: GroundTruth) -> None:
    """``source_file_name,target_file_name``: the name with attributes, the name on disk."""
    machine = path.parent.name
    for line, row in enumerate(_rows(path), start=1):
        if line == 1 and row[0].strip() == "source_file_name":
            continue
        if len(row) < 2:
            raise GroundTruthError(f"{path}, line {line}: expected 'source_file_name,target_file_name', got {row}")
        match = _FULL_NAME.fullmatch(row[0].strip()[:-4] if row[0].strip().endswith(".wav") else row[0].strip())
        if match is None:
            raise GroundTruthError(f"{path}, line {line}: {row[0]!r} is not a DCASE file name")
        gt.attributes[(machine, row[1].strip())] = match["attrs"] or ""


def load_ground_truth(source: str | Path) -> GroundTruth:
    """Read one official ground-truth CSV or every one below a folder."""
    source = Path(source).expanduser()
    if not source.exists():
        raise GroundTruthError(f"ground truth {source} does not exist")
    files = sorted(source.rglob("*.csv")) if source.is_dir() else [source]
    if not files:
        raise GroundTruthError(f"no ground-truth CSV files found in {source}")
    gt = GroundTruth()
    domain_files = []
    for path in files:
        match = _NAME.fullmatch(path.name)
        if match and path.parent.name == "ground_truth_domain":
            domain_files.append((path, match["machine"]))
        elif _CORRESPONDENCE.fullmatch(path.name):
            _read_correspondence(path, gt)
        elif match:
            _read_labels(path, match["machine"], gt, match["domain"])
        else:
            _read_machine_blocks(path, gt)
    for path, machine in domain_files:
        _read_domains(path, machine, gt)
    return gt
