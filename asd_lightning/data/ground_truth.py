"""Official ground-truth CSVs for anonymised evaluation clips.

Accepted files (a single CSV or a folder searched recursively):

* 2022+: ``ground_truth_<machine>_section_<XX>_test.csv`` with rows ``file,label``
  (1 = anomaly), and, in a folder named ``ground_truth_domain``, files of the same name with
  rows ``file,domain`` (0 = source, 1 = target), as in the official 2022 evaluator.
* 2021: ``ground_truth_<machine>_section_<XX>_<source|target>_test.csv`` rows ``file,label``;
  the domain comes from the file name.
* 2020: ``eval_data_list.csv``-style files where a line holding only a machine name starts
  that machine's ``file,label`` rows.
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
LABELS = {0: "normal", 1: "anomaly"}
DOMAINS = {0: "source", 1: "target"}


class GroundTruthError(ValueError):
    """A ground-truth CSV is malformed or disagrees with the dataset."""


@dataclass
class GroundTruth:
    """Labels and domains of evaluation clips, keyed by ``(machine, file name)``."""

    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    domains: dict[tuple[str, str], str] = field(default_factory=dict)

    def apply(self, index: pd.DataFrame) -> pd.DataFrame:
        """Fill ``unknown`` labels/domains of ``index`` rows; conflicting labels raise."""
        index = index.copy()
        keys = list(zip(index["machine"], index["file"]))
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
        gt.labels[(machine, row[0].strip())] = _code(row[1], LABELS, path, line, "label")
        if domain is not None:
            gt.domains[(machine, row[0].strip())] = domain


def _read_domains(path: Path, machine: str, gt: GroundTruth) -> None:
    for line, row in enumerate(_rows(path), start=1):
        if len(row) < 2:
            raise GroundTruthError(f"{path}, line {line}: expected 'file,domain', got {row}")
        gt.domains[(machine, row[0].strip())] = _code(row[1], DOMAINS, path, line, "domain")


def _read_machine_blocks(path: Path, gt: GroundTruth) -> None:
    machine = None
    for line, row in enumerate(_rows(path), start=1):
        if len(row) == 1 or (len(row) > 1 and not any(c.strip() for c in row[1:])):
            machine = row[0].strip()
            continue
        if machine is None:
            raise GroundTruthError(f"{path}, line {line}: a machine-name line must come before the rows")
        gt.labels[(machine, row[0].strip())] = _code(row[1], LABELS, path, line, "label")


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
        elif match:
            _read_labels(path, match["machine"], gt, match["domain"])
        else:
            _read_machine_blocks(path, gt)
    for path, machine in domain_files:
        _read_domains(path, machine, gt)
    return gt
