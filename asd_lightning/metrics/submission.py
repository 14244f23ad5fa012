"""Official DCASE Task 2 submission CSVs: ``anomaly_score_*.csv`` and ``decision_result_*.csv``.

Each file holds ``<wav file name>,<value>`` rows without a header, one file per group:

* 2020: ``<kind>_<machine>_id_<XX>.csv``
* 2021: ``<kind>_<machine>_section_<XX>_<source|target>_test.csv``
* 2022 and later: ``<kind>_<machine>_section_<XX>_test.csv``

where ``<kind>`` is ``anomaly_score`` or ``decision_result``.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd

from asd_lightning.metrics.official import group_keys, scheme

KINDS = ("anomaly_score", "decision_result")
_PATTERNS = {
    2020: re.compile(r"(?P<kind>anomaly_score|decision_result)_(?P<machine>.+)_id_(?P<section>\d{2})\.csv"),
    2021: re.compile(
        r"(?P<kind>anomaly_score|decision_result)_(?P<machine>.+)_section_(?P<section>\d{2})"
        r"_(?P<domain>source|target)_test\.csv"
    ),
    2022: re.compile(r"(?P<kind>anomaly_score|decision_result)_(?P<machine>.+)_section_(?P<section>\d{2})_test\.csv"),
}


def submission_filename(kind: str, year: int, machine: str, section: int, domain: str | None = None) -> str:
    """Official CSV name for ``kind`` (``anomaly_score``/``decision_result``) of one group."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if scheme(year) == 2020:
        return f"{kind}_{machine}_id_{int(section):02d}.csv"
    if scheme(year) == 2021:
        if domain not in ("source", "target"):
            raise ValueError(f"2021 submission files are per domain; got domain {domain!r}")
        return f"{kind}_{machine}_section_{int(section):02d}_{domain}_test.csv"
    return f"{kind}_{machine}_section_{int(section):02d}_test.csv"


def write_submission(df: pd.DataFrame, out_dir: str | Path, year: int) -> list[Path]:
    """Write one anomaly_score (and, with a ``decision`` column, decision_result) CSV per group.

    ``df`` columns: ``machine``, ``section``, ``domain`` (2021), ``file`` (wav base name),
    ``score`` and optionally ``decision`` (0/1). Rows are sorted by file. Returns the paths.
    """
    keys = group_keys(year)
    missing = [c for c in [*keys, "file", "score"] if c not in df.columns]
    if missing:
        raise ValueError(f"write_submission() needs columns {[*keys, 'file', 'score']}; missing {missing}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for values, group in df.groupby(keys, sort=True):
        key = dict(zip(keys, values))
        duplicated = group["file"][group["file"].duplicated()]
        if len(duplicated):
            raise ValueError(f"duplicated file {duplicated.iloc[0]!r} in group {key}")
        group = group.sort_values("file")
        columns = {"anomaly_score": [repr(float(v)) for v in group["score"]]}
        if "decision" in group.columns:
            columns["decision_result"] = [str(int(v)) for v in group["decision"]]
        for kind, column in columns.items():
            path = out_dir / submission_filename(kind, year, **key)
            with open(path, "w", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(zip(group["file"], column))
            paths.append(path)
    return paths


def _read_csv(path: Path, kind: str) -> dict[str, float]:
    values: dict[str, float] = {}
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            where = f"{path}, line {line}"
            if len(row) != 2:
                raise ValueError(f"{where}: expected 2 columns '<file>,<value>', got {len(row)}: {row}")
            name, text = row[0].strip(), row[1].strip()
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{where}: value {text!r} is not a number") from None
            if not math.isfinite(value) or (kind == "decision_result" and value not in (0.0, 1.0)):
                raise ValueError(f"{where}: invalid {kind} value {text!r}")
            if name in values:
                raise ValueError(f"{where}: duplicated file {name!r}")
            values[name] = value
    if not values:
        raise ValueError(f"{path}: no rows")
    return values


def read_submission(score_dir: str | Path, year: int) -> pd.DataFrame:
    """Read every submission CSV in ``score_dir``.

    Returns columns ``machine``, ``section``, ``domain`` (2021; ``None`` otherwise), ``file``,
    ``score`` and, if decision_result files exist, ``decision`` (int). Every decision file
    must match an anomaly_score file with the same clips.
    """
    score_dir = Path(score_dir)
    if not score_dir.is_dir():
        raise ValueError(f"score folder {score_dir} does not exist")
    pattern = _PATTERNS[scheme(year)]
    tables: dict[str, dict[tuple, tuple[Path, dict[str, float]]]] = {kind: {} for kind in KINDS}
    for path in sorted(p for kind in KINDS for p in score_dir.glob(f"{kind}_*.csv")):
        match = pattern.fullmatch(path.name)
        if match is None:
            example = submission_filename("anomaly_score", year, "fan", 0, "source")
            raise ValueError(f"{path}: file name does not follow the {year} naming (e.g. {example})")
        key = (match["machine"], int(match["section"]), match.groupdict().get("domain"))
        tables[match["kind"]][key] = (path, _read_csv(path, match["kind"]))
    scores, decisions = tables["anomaly_score"], tables["decision_result"]
    if not scores:
        raise ValueError(f"no anomaly_score_*.csv files in {score_dir}")
    for key, (path, values) in decisions.items():
        if key not in scores:
            missing = score_dir / path.name.replace("decision_result", "anomaly_score", 1)
            raise ValueError(f"{missing} is missing (its decision_result file {path.name} is there)")
        if set(values) != set(scores[key][1]):
            raise ValueError(f"{path}: its clips do not match those of {scores[key][0].name}")
    rows = []
    for key, (_, values) in sorted(scores.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")):
        machine, section, domain = key
        for name, score in sorted(values.items()):
            row = {"machine": machine, "section": section, "domain": domain, "file": name, "score": score}
            if decisions:
                decision = decisions.get(key, (None, {}))[1].get(name)
                if decision is None:
                    name = scores[key][0].name
                    raise ValueError(f"{score_dir / name.replace('anomaly_score', 'decision_result', 1)} is missing "
                                     f"(its anomaly_score file {name} is there)")
                row["decision"] = int(decision)
            rows.append(row)
    return pd.DataFrame(rows)
