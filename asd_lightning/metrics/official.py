"""Official DCASE Task 2 scores (2020, 2021, 2022 and later years).

Scores are "higher = more anomalous"; pAUC is sklearn's McClish-standardised partial AUC
(``roc_auc_score(y, s, max_fpr=0.1)``, chance = 0.5).

* 2020: per (machine, ID) AUC and pAUC; arithmetic means; official score = arithmetic mean of
  all AUC and pAUC values.
* 2021: per (machine, section, domain) AUC and pAUC on that domain's own test clips;
  arithmetic and harmonic means per column; official score = one harmonic mean over all AUC
  and pAUC values.
* 2022 and later (the 2023, 2024 and 2025 evaluators alike, each machine type with section 00
  only; 2026 assumed the same): per (machine, section) AUC(source) on source normals plus *all* anomalies of
  the section, AUC(target) likewise with target normals, pAUC on every clip of the section;
  official score = one harmonic mean over all AUC(source), AUC(target) and pAUC values.
  ``pauc_source``/``pauc_target`` (same subsets as the AUCs) are informative only.

Harmonic means floor their inputs at ``sys.float_info.epsilon`` as the official evaluators do.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import roc_auc_score

from asd_lightning.data.years import year_facts

EPS = sys.float_info.epsilon
MAX_FPR = 0.1
DECISION_METRICS = ["precision", "recall", "f1"]
_LABELS = {"normal": 0, "anomaly": 1, 0: 0, 1: 1}
_TITLES = {
    "auc": "AUC", "pauc": "pAUC", "auc_source": "AUC (source)", "auc_target": "AUC (target)",
    "pauc_source": "pAUC (source)", "pauc_target": "pAUC (target)",
    "precision": "precision", "recall": "recall", "f1": "F1",
}
_STAT_NAMES = {"hmean": "harmonic mean", "amean": "arithmetic mean"}


def scheme(year: int) -> int:
    """Map a challenge year onto its scoring rules: 2020, 2021, or 2022 (2022 and later: the
    2023-2025 evaluators score each machine type's section 00 the same way; the year's
    ``scoring`` in :mod:`asd_lightning.data.years`)."""
    if int(year) < 2020:
        raise ValueError(f"DCASE Task 2 scores are defined from 2020 on, got year {year}")
    return year_facts(year).scoring


def score_columns(year: int) -> list[str]:
    """Per-row score columns of ``year`` (without the decision metrics)."""
    if scheme(year) == 2022:
        return ["auc_source", "auc_target", "pauc", "pauc_source", "pauc_target"]
    return ["auc", "pauc"]


def official_columns(year: int) -> list[str]:
    """The columns whose values make up the official score of ``year``."""
    return ["auc_source", "auc_target", "pauc"] if scheme(year) == 2022 else ["auc", "pauc"]


def statistics(year: int) -> list[str]:
    """Means reported per machine and overall: ``amean`` (2020) or ``hmean`` and ``amean``."""
    return ["amean"] if scheme(year) == 2020 else ["hmean", "amean"]


def official_statistic(year: int) -> str:
    """How the official score aggregates: ``amean`` (2020) or ``hmean`` (2021 on)."""
    return "amean" if scheme(year) == 2020 else "hmean"


def group_keys(year: int) -> list[str]:
    """Columns naming one scored group (one submission file): 2021 scores each domain apart."""
    return ["machine", "section", "domain"] if scheme(year) == 2021 else ["machine", "section"]


def hmean(values) -> float:
    """Harmonic mean with every value floored at machine epsilon (official evaluators)."""
    return float(scipy.stats.hmean(np.maximum(np.asarray(values, dtype=float), EPS)))


def _mean(values, statistic: str) -> float:
    return hmean(values) if statistic == "hmean" else float(np.mean(np.asarray(values, dtype=float)))


def _where(key: dict) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in key.items())


def _auc(y: np.ndarray, s: np.ndarray, key: dict, subset: str, max_fpr: float | None = None) -> float:
    if not (y == 0).any() or not (y == 1).any():
        missing = "normal" if not (y == 0).any() else "anomalous"
        raise ValueError(f"no {missing} test clips for {_where(key)} ({subset}): AUC is undefined")
    return float(roc_auc_score(y, s, max_fpr=max_fpr))


def _decision_metrics(y: np.ndarray, d: np.ndarray) -> dict[str, float]:
    tp = float(np.sum((y == 1) & (d == 1)))
    fp = float(np.sum((y == 0) & (d == 1)))
    fn = float(np.sum((y == 1) & (d == 0)))
    precision = tp / max(tp + fp, EPS)
    recall = tp / max(tp + fn, EPS)
    f1 = 2.0 * precision * recall / max(precision + recall, EPS)
    return {"precision": precision, "recall": recall, "f1": f1}


def _validate(df: pd.DataFrame, year: int) -> pd.DataFrame:
    needed = ["machine", "section", "label", "score"] + (["domain"] if scheme(year) > 2020 else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"evaluate() needs columns {needed}; missing {missing}")
    if df.empty:
        raise ValueError("evaluate() got no clips")
    out = df.copy()
    labels = out["label"].map(lambda v: _LABELS.get(v.strip().lower() if isinstance(v, str) else v))
    if labels.isna().any():
        bad = sorted({str(v) for v in out.loc[labels.isna(), "label"]})
        raise ValueError(f"labels must be 0/1 or 'normal'/'anomaly'; got {bad} (ground truth missing?)")
    out["label"] = labels.astype(int)
    out["section"] = out["section"].astype(int)
    out["score"] = out["score"].astype(float)
    if not np.isfinite(out["score"]).all():
        raise ValueError("scores must be finite numbers")
    if scheme(year) > 2020:
        out["domain"] = out["domain"].astype(str).str.lower()
        bad = sorted(set(out["domain"]) - {"source", "target"})
        if bad:
            raise ValueError(f"domains must be 'source' or 'target'; got {bad} (ground truth missing?)")
    if "decision" in out.columns:
        if not out["decision"].isin([0, 1]).all():
            raise ValueError("decisions must all be 0 or 1")
        out["decision"] = out["decision"].astype(int)
    return out


def domain_clips(domain: np.ndarray, label: np.ndarray, dom: str, year: int) -> np.ndarray:
    """Mask of the clips of one section that its AUC for domain ``dom`` counts: 2022 and
    later, that domain's normals plus all anomalies of the section; 2021, that domain's clips."""
    in_domain = np.asarray(domain) == dom
    return in_domain | (np.asarray(label) == 1) if scheme(year) == 2022 else in_domain


def _section_row(group: pd.DataFrame, year: int, key: dict) -> dict[str, float]:
    y, s = group["label"].to_numpy(), group["score"].to_numpy()
    row: dict[str, float] = {}
    if scheme(year) == 2022:
        domain = group["domain"].to_numpy()
        for dom in ("source", "target"):
            subset = domain_clips(domain, y, dom, year)  # this domain's normals + ALL anomalies
            what = f"{dom} normals + all anomalies"
            row[f"auc_{dom}"] = _auc(y[subset], s[subset], key, what)
            row[f"pauc_{dom}"] = _auc(y[subset], s[subset], key, what, MAX_FPR)
        row["pauc"] = _auc(y, s, key, "all clips", MAX_FPR)
    else:
        row["auc"] = _auc(y, s, key, "test clips")
        row["pauc"] = _auc(y, s, key, "test clips", MAX_FPR)
    if "decision" in group.columns:
        row.update(_decision_metrics(y, group["decision"].to_numpy()))
    return row


def evaluate(df: pd.DataFrame, year: int) -> "ScoreReport":
    """Compute the official DCASE Task 2 scores of ``year`` from per-clip scores.

    ``df`` has one row per test clip with columns ``machine``, ``section`` (the ID in 2020),
    ``domain`` (``source``/``target``; ignored in 2020), ``label`` (0/1 or
    ``normal``/``anomaly``), ``score`` (higher = more anomalous) and optionally ``decision``
    (0/1), which adds precision, recall and F1.
    """
    data = _validate(df, year)
    keys = group_keys(year)
    records = []
    for values, group in data.groupby(keys, sort=True):
        key = dict(zip(keys, values))
        key["section"] = int(key["section"])
        records.append({**key, **_section_row(group, year, key)})
    metrics = score_columns(year) + (DECISION_METRICS if "decision" in data.columns else [])
    return ScoreReport.from_rows(pd.DataFrame(records)[keys + metrics], year)


@dataclass
class ScoreReport:
    """Result of :func:`evaluate`; all values are fractions in [0, 1].

    ``rows``: one row per machine/section (2021: per machine/section/domain) with the metric
    columns; ``machines``: one row per machine with ``<metric>_<hmean|amean>`` columns;
    ``overall``: ``<metric>_<hmean|amean>`` over all rows; ``official_score``: the year's
    official score.
    """

    year: int
    rows: pd.DataFrame
    machines: pd.DataFrame
    overall: dict[str, float]
    official_score: float

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, year: int) -> "ScoreReport":
        """The report of per-section ``rows`` (as :attr:`rows`): machine and overall means and the
        official score computed from them, e.g. for the rows of several runs put together."""
        metrics = [c for c in rows.columns if c not in ("machine", "section", "domain")]

        def means(frame: pd.DataFrame) -> dict[str, float]:
            return {f"{m}_{stat}": _mean(frame[m], stat) for m in metrics for stat in statistics(year)}

        machines = pd.DataFrame([{"machine": m, **means(group)} for m, group in rows.groupby("machine", sort=True)])
        official = _mean(rows[official_columns(year)].to_numpy().ravel(), official_statistic(year))
        return cls(year=int(year), rows=rows, machines=machines, overall=means(rows), official_score=official)

    @classmethod
    def load(cls, path: str | Path) -> "ScoreReport":
        """Read a ``scores.json`` written by :meth:`save`."""
        saved = json.loads(Path(path).read_text())
        return cls.from_rows(pd.DataFrame(saved["rows"]), saved["year"])

    @property
    def metrics(self) -> list[str]:
        """Metric columns of :attr:`rows`, in order."""
        return [c for c in self.rows.columns if c not in ("machine", "section", "domain")]

    def _section_name(self, section: int) -> str:
        return f"{'id' if scheme(self.year) == 2020 else 'section'}_{int(section):02d}"

    def to_dict(self) -> dict:
        """JSON-able dict: year, official score, overall means, per-machine means and rows."""
        rows = [
            {k: (v if isinstance(v, str) else int(v) if k == "section" else float(v)) for k, v in r.items()}
            for r in self.rows.to_dict(orient="records")
        ]
        machines = {
            r.pop("machine"): {k: float(v) for k, v in r.items()}
            for r in self.machines.to_dict(orient="records")
        }
        return {
            "year": self.year,
            "official_score": float(self.official_score),
            "official_statistic": official_statistic(self.year),
            "official_columns": official_columns(self.year),
            "overall": {k: float(v) for k, v in self.overall.items()},
            "machines": machines,
            "rows": rows,
        }

    def to_frame(self) -> pd.DataFrame:
        """One table: ``level`` = section / machine / overall / official rows.

        Section rows carry ``machine``, ``section`` (and ``domain`` in 2021) and the metrics;
        machine and overall rows carry ``statistic`` (``hmean``/``amean``) and the means
        (overall rows have ``machine == "all"``); the last row (``level == "official"``)
        holds the official score in column ``official_score``.
        """
        def means(level: str, machine: str, values: dict[str, float]) -> list[pd.DataFrame]:
            return [
                pd.DataFrame({"level": [level], "machine": [machine], "statistic": [stat],
                              **{m: [values[f"{m}_{stat}"]] for m in self.metrics}})
                for stat in statistics(self.year)
            ]

        parts = []
        for record in self.machines.to_dict(orient="records"):
            parts.append(self.rows[self.rows["machine"] == record["machine"]].assign(level="section", statistic=""))
            parts.extend(means("machine", record["machine"], record))
        parts.extend(means("overall", "all", self.overall))
        parts.append(pd.DataFrame({
            "level": ["official"], "machine": ["all"], "statistic": [official_statistic(self.year)],
            "official_score": [self.official_score],
        }))
        frame = pd.concat(parts, ignore_index=True)
        frame["section"] = frame["section"].astype("Int64")
        keys = [k for k in group_keys(self.year) if k in frame.columns]
        return frame[["level", *keys, "statistic", *self.metrics, "official_score"]]

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``scores.csv`` (:meth:`to_frame`) and ``scores.json`` (:meth:`to_dict`) into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = out_dir / "scores.csv", out_dir / "scores.json"
        self.to_frame().to_csv(csv_path, index=False)
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return csv_path, json_path

    def format_table(self) -> str:
        """Readable text table in percent (2 decimals): sections, machine means, overall, official score."""
        keys = group_keys(self.year)
        lines = []
        for _, row in self.to_frame().iterrows():
            if row["level"] == "official":
                continue
            cells = {"machine": row["machine"]}
            is_section = row["level"] == "section"
            cells["section"] = self._section_name(row["section"]) if is_section else _STAT_NAMES[row["statistic"]]
            if "domain" in keys:
                cells["domain"] = row["domain"] if is_section else ""
            cells.update({_TITLES[m]: f"{100 * row[m]:.2f}" for m in self.metrics})
            lines.append(cells)
        table = pd.DataFrame(lines).rename(columns={"section": "id" if scheme(self.year) == 2020 else "section"})
        how = f"{_STAT_NAMES[official_statistic(self.year)]} of all " + " / ".join(
            _TITLES[c] for c in official_columns(self.year)
        )
        return (
            f"DCASE {self.year} Task 2 scores (%)\n{table.to_string(index=False)}\n"
            f"official score ({how}): {100 * self.official_score:.2f}"
        )

    def metrics_dict(self, prefix: str = "test/") -> dict[str, float]:
        """Flat ``name -> value`` dict for loggers (fractions, not percent).

        Names (``<m>`` = a metric column such as ``auc_source``, ``pauc``, ``f1``;
        ``<stat>`` = ``hmean`` or ``amean``):

        * ``{prefix}official_score``
        * ``{prefix}<m>_<stat>`` — over all machines and sections
        * ``{prefix}<machine>/<m>_<stat>`` — per machine type
        * ``{prefix}<machine>/section_<XX>/<m>`` — per section (2020: ``id_<XX>``;
          2021: ``{prefix}<machine>/section_<XX>/<source|target>/<m>``)
        """
        out = {f"{prefix}official_score": float(self.official_score)}
        out.update({f"{prefix}{k}": float(v) for k, v in self.overall.items()})
        for record in self.machines.to_dict(orient="records"):
            machine = record.pop("machine")
            out.update({f"{prefix}{machine}/{k}": float(v) for k, v in record.items()})
        for record in self.rows.to_dict(orient="records"):
            where = f"{prefix}{record['machine']}/{self._section_name(record['section'])}/"
            if "domain" in group_keys(self.year):
                where += f"{record['domain']}/"
            out.update({f"{where}{m}": float(record[m]) for m in self.metrics})
        return out
