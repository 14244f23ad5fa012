"""The two-BCE paper's score table (Kuroyanagi et al. 2022, Tables II and III).

Per product ID (section): the harmonic mean of its AUC and pAUC (``p = 0.1``); per machine
type: the harmonic mean of all its IDs' AUC and pAUC values; ``All/Har-mean``: the harmonic
mean of every machine type's and ID's AUC and pAUC values. Built from an official
:class:`~asd_lightning.metrics.official.ScoreReport`: on DCASE 2021 data (the paper's) a
section's values are the AUC and pAUC of each scored domain (the paper scores the source
domain only); on 2022+ data they are the section's official AUC(source), AUC(target) and pAUC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from asd_lightning.metrics.official import ScoreReport, hmean, official_columns

PROTOCOLS = ("official", "two_bce")


@dataclass
class TwoBCEMeasure:
    """``sections``: machine, section, hmean; ``machines``: machine, hmean; ``all``: All/Har-mean
    (fractions in [0, 1])."""

    sections: pd.DataFrame
    machines: pd.DataFrame
    all: float

    @classmethod
    def from_report(cls, report: ScoreReport) -> "TwoBCEMeasure":
        columns = official_columns(report.year)
        long = report.rows.melt(id_vars=["machine", "section"], value_vars=columns)["machine section value".split()]
        sections = long.groupby(["machine", "section"], sort=True)["value"].agg(hmean).rename("hmean").reset_index()
        machines = long.groupby("machine", sort=True)["value"].agg(hmean).rename("hmean").reset_index()
        return cls(sections=sections, machines=machines, all=hmean(long["value"]))

    def metrics_dict(self, prefix: str = "test/two_bce/") -> dict[str, float]:
        """``{prefix}all_hmean``, ``{prefix}<machine>/hmean``, ``{prefix}<machine>/section_XX/hmean``."""
        out = {f"{prefix}all_hmean": float(self.all)}
        out.update({f"{prefix}{r.machine}/hmean": float(r.hmean) for r in self.machines.itertuples()})
        out.update({f"{prefix}{r.machine}/section_{int(r.section):02d}/hmean": float(r.hmean)
                    for r in self.sections.itertuples()})
        return out

    def to_frame(self) -> pd.DataFrame:
        """Machine types as rows, one column per ID plus ``har-mean``, as the paper prints it."""
        table = self.sections.pivot(index="machine", columns="section", values="hmean")
        table.columns = [f"ID {int(s):02d}" for s in table.columns]
        table["har-mean"] = self.machines.set_index("machine")["hmean"]
        return table

    def format_table(self) -> str:
        table = (100 * self.to_frame()).round(2)
        return ("Two-BCE paper measure (Kuroyanagi et al. 2022, Table II): harmonic mean of AUC and pAUC (%)\n"
                f"{table.to_string(na_rep='-')}\nAll/Har-mean: {100 * self.all:.2f}")

    def save(self, out_dir: str | Path) -> Path:
        """``two_bce_measure.json`` in ``out_dir``."""
        path = Path(out_dir) / "two_bce_measure.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "all_hmean": float(self.all),
            "machines": {r.machine: float(r.hmean) for r in self.machines.itertuples()},
            "sections": [{"machine": r.machine, "section": int(r.section), "hmean": float(r.hmean)}
                         for r in self.sections.itertuples()],
        }, indent=2) + "\n")
        return path
