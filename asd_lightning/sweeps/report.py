"""One results table for a multirun: per machine type, section and domain the AUC / pAUC, per
machine type and overall the official score (and the two-BCE paper's measure when a run used
``score_protocol=two_bce``), as mean ± standard deviation over seeds with the per-seed values,
and the swept settings as columns.

Built from what each run saved (:mod:`asd_lightning.sweeps.runs`). The settings are the
overrides whose values differ between runs (``seed``, ``hydra.*``, ``ckpt_path`` and ``trial``
aside). A setting that follows the machine type (``data.machine_types=[fan],[valve]``,
``experiment=two_bce/fan,two_bce/gearbox``) is shown on that machine's rows; the others split
the table. The overall official score of a seed pools the sections of all machine types run
with that seed (the official score of the whole submission) and is left out, with a note, when
one of them is missing. Standard deviations are the sample standard deviation over seeds.

``ResultsTable`` is the Hydra callback that writes ``results.csv`` and ``results.md`` into the
sweep folder at the end of every multirun, prints the table and logs it to W&B when the run
config has a W&B logger; ``asd-report`` (:mod:`asd_lightning.sweeps.cli`) rebuilds it later.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from asd_lightning.metrics.official import ScoreReport, score_columns
from asd_lightning.metrics.two_bce_measure import TwoBCEMeasure
from asd_lightning.sweeps.runs import BASIC_SWEEPER, Problem, Run, collect
from asd_lightning.utils.errors import UserError

EXIT_SOME_LEFT_OUT = 3  # a multirun (or asd-report) whose table leaves out failed or missing jobs

log = logging.getLogger(__name__)

RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"
IGNORED = ("hydra.", "ckpt_path", "trial", "seed")
ALL = "all"
MACHINES = "data.machine_types"  # a column of its own: machine
_TITLES = {"official_score": "official score", "two_bce_hmean": "two-BCE hmean", "auc": "AUC",
           "auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC", "pauc_source": "pAUC (source)",
           "pauc_target": "pAUC (target)"}


def _setting(override: str) -> tuple[str, str] | None:
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    return None if key.startswith(IGNORED) else (key, value)


def swept_settings(runs: list[Run]) -> tuple[list[str], list[str]]:
    """The overrides that differ between runs: (settings that split the table, settings that
    follow the machine type)."""
    values = [dict(filter(None, map(_setting, run.overrides))) for run in runs]
    keys = sorted({k for v in values for k in v})
    swept = [k for k in keys if len({v.get(k, "") for v in values}) > 1]
    bound = []
    for key in swept:
        per_machine: dict[str, set[str]] = {}
        for run, settings in zip(runs, values):
            for machine in run.report.rows["machine"].unique():
                per_machine.setdefault(machine, set()).add(settings.get(key, ""))
        if all(len(v) == 1 for v in per_machine.values()):
            bound.append(key)
    return [k for k in swept if k not in bound], [k for k in bound if k != MACHINES]


@dataclass
class ResultsTable:
    """The table (``table``: one row per settings, machine, section, domain and metric, with
    ``mean``, ``std``, ``n`` and one ``seed=<s>`` column per seed; fractions), the problems
    (missing / failed jobs) and notes."""

    table: pd.DataFrame
    settings: list[str]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_folders(cls, paths: list[Path]) -> "ResultsTable":
        runs, problems, notes = collect(paths)
        return cls.from_runs(runs, problems, notes)

    @classmethod
    def from_runs(cls, runs: list[Run], problems: list[Problem] | None = None,
                  notes: list[str] | None = None) -> "ResultsTable":
        problems, notes = list(problems or []), list(notes or [])
        if not runs:
            return cls(pd.DataFrame(), [], problems, notes + ["no run has finished scoring"])
        free, bound = swept_settings(runs)
        pools: dict[tuple, list[Run]] = {}
        for run in runs:
            settings = dict(filter(None, map(_setting, run.overrides)))
            pools.setdefault((tuple(settings.get(k, "") for k in free), run.seed), []).append(run)
        machines_of_group: dict[tuple, set[str]] = {}
        for (group, _), pool in pools.items():
            machines_of_group.setdefault(group, set()).update(m for r in pool for m in r.report.rows["machine"])
        records = []
        for (group, seed), pool in pools.items():
            kept, seen = [], {}
            for run in pool:
                clash = seen.keys() & set(run.report.rows["machine"])
                if clash:
                    problems.append(Problem("duplicate", run.label, f"{run.folder} scores {sorted(clash)} again for "
                                            f"seed {seed}, as {seen[sorted(clash)[0]].folder} does; left out"))
                    continue
                kept.append(run)
                seen.update({m: run for m in run.report.rows["machine"]})
            base = dict(zip(free, group), seed=seed)
            settings_of = {m: dict(filter(None, map(_setting, r.overrides))) for m, r in seen.items()}
            by_machine = {m: {k: v.get(k, "") for k in bound} for m, v in settings_of.items()}
            by_machine[ALL] = dict.fromkeys(bound, "")
            missing = sorted(machines_of_group[group] - seen.keys())
            if missing:
                notes.append(f"overall scores of seed {seed}{_where(base, free)} left out: no scores of {missing}")
            records += _records(kept, base, by_machine, overall=not missing)
        return cls(_aggregate(pd.DataFrame(records), free, bound), free + bound, problems, notes)

    def official(self) -> pd.DataFrame:
        """The rows of the per-machine and overall official scores (and two-BCE measure)."""
        return self.table[self.table["section"] == ALL] if len(self.table) else self.table

    def to_markdown(self) -> str:
        """Three Markdown tables in percent: official scores per machine type and overall (mean
        ± std and each seed), the metrics of every section (mean ± std), and those of every
        section per seed; and the jobs left out."""
        parts = []
        if len(self.table):
            seeds = [c for c in self.table.columns if c.startswith("seed=")]
            rows = []
            for _, r in self.official().iterrows():
                row = {k: r[k] for k in self.settings}
                row.update(machine=r["machine"], metric=_TITLES[r["metric"]], **{"mean ± std": _cell(r)},
                           n=int(r["n"]), **{s: _percent(r[s]) for s in seeds})
                rows.append(row)
            parts.append("### Official score per machine type and overall (%)\n\n" + markdown_table(pd.DataFrame(rows)))
            sections = self.table[self.table["section"] != ALL]
            # a domain of its own only where rows are per domain (2020/2021), not where the metric names it
            per_domain = (sections["domain"] != sections["metric"].map(metric_domain)).any()
            index = self.settings + ["machine", "section"] + (["domain"] if per_domain else [])
            wide = sections.assign(cell=[_cell(r) for _, r in sections.iterrows()]).pivot_table(
                index=index, columns="metric", values="cell", aggfunc="first", sort=False).reset_index()
            metrics = [m for m in _TITLES if m in wide.columns]
            wide = wide[index + metrics].rename(columns=_TITLES)
            parts.append("### Per section: mean ± std over seeds (%)\n\n" + markdown_table(wide))
            per_seed = sections.assign(metric=sections["metric"].map(_TITLES))[index + ["metric"] + seeds]
            parts.append("### Per section and seed (%)\n\n" + markdown_table(
                per_seed.assign(**{c: per_seed[c].map(_percent) for c in seeds})))
        left = [f"- {p}" for p in self.problems] + [f"- {n}" for n in self.notes]
        if left:
            parts.append("### Left out\n\n" + "\n".join(left))
        return "\n\n".join(parts) + "\n"

    def save(self, folder: Path) -> tuple[Path, Path]:
        """``results.csv`` (the numeric table) and ``results.md`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(folder / RESULTS_CSV, index=False)
        (folder / RESULTS_MD).write_text(self.to_markdown())
        return folder / RESULTS_CSV, folder / RESULTS_MD

    def log_to_wandb(self, project: str, group: str, save_dir: Path, offline: bool) -> None:
        """One W&B run (job type ``results``, in the sweep's group) holding the table."""
        import wandb

        run = wandb.init(project=project, group=group, job_type="results", name=f"{group}-results",
                         dir=str(save_dir), mode="offline" if offline else "online", reinit="create_new")
        try:
            run.log({"results": wandb.Table(dataframe=self.table.astype({c: str for c in self.settings}))})
            overall = self.official()
            overall = overall[(overall["machine"] == ALL) & (overall["metric"] == "official_score")]
            if len(overall) == 1:
                run.summary["official_score_mean"] = float(overall["mean"].iloc[0])
        finally:
            run.finish()


def metric_domain(metric: str) -> str:
    """The domain a per-section metric is computed on (``auc_source`` → ``source``); empty for
    metrics of both domains."""
    for domain in ("source", "target"):
        if metric.endswith(f"_{domain}"):
            return domain
    return ""


def _where(base: dict, free: list[str]) -> str:
    return "".join(f", {k}={base[k]}" for k in free)


def _records(pool: list[Run], base: dict, bound: dict[str, dict], overall: bool) -> list[dict]:
    """Long records of one (settings, seed): sections, machine types and, if complete, overall."""
    year = pool[0].report.year
    rows = pd.concat([r.report.rows for r in pool], ignore_index=True)
    pooled = ScoreReport.from_rows(rows, year)
    two_bce = TwoBCEMeasure.from_report(pooled) if any(r.two_bce for r in pool) else None
    out = []

    def add(machine: str, section: str, domain: str, metric: str, value: float) -> None:
        out.append({**base, **bound[machine], "machine": machine, "section": section, "domain": domain,
                    "metric": metric, "value": float(value)})

    for r in rows.to_dict(orient="records"):
        for metric in score_columns(year):
            add(r["machine"], f"{int(r['section']):02d}", r.get("domain") or metric_domain(metric), metric, r[metric])
    if two_bce is not None:
        for r in two_bce.sections.itertuples():
            add(r.machine, f"{int(r.section):02d}", "", "two_bce_hmean", r.hmean)
    for machine, group in rows.groupby("machine", sort=True):
        add(machine, ALL, "", "official_score", ScoreReport.from_rows(group, year).official_score)
        if two_bce is not None:
            add(machine, ALL, "", "two_bce_hmean", two_bce.machines.set_index("machine").loc[machine, "hmean"])
    if overall:
        add(ALL, ALL, "", "official_score", pooled.official_score)
        if two_bce is not None:
            add(ALL, ALL, "", "two_bce_hmean", two_bce.all)
    return out


def _aggregate(long: pd.DataFrame, free: list[str], bound: list[str]) -> pd.DataFrame:
    """Long records → one row per settings/machine/section/domain/metric: mean, std, n, per seed."""
    index = free + bound + ["machine", "section", "domain", "metric"]
    long = long.assign(seed=[f"seed={s}" for s in long["seed"]])
    wide = long.pivot_table(index=index, columns="seed", values="value", aggfunc="first", sort=False)
    seeds = sorted(wide.columns, key=lambda c: (len(c), c))
    values = wide[seeds].to_numpy(dtype=float)
    stats = pd.DataFrame({"mean": np.nanmean(values, axis=1),
                          "std": pd.DataFrame(values).std(axis=1, ddof=1).to_numpy(),
                          "n": np.isfinite(values).sum(axis=1)}, index=wide.index)
    table = pd.concat([stats, wide[seeds]], axis=1).reset_index()
    order = {m: i for i, m in enumerate(_TITLES)}
    table["_machine"] = table["machine"] == ALL
    table["_metric"] = table["metric"].map(order)
    return table.sort_values(free + ["_machine", "machine", "section", "domain", "_metric"],
                             kind="stable").drop(columns=["_machine", "_metric"]).reset_index(drop=True)


def _percent(value: float) -> str:
    return "" if not np.isfinite(value) else f"{100 * value:.2f}"


def _cell(row: pd.Series) -> str:
    return _percent(row["mean"]) if row["n"] < 2 else f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (cells as text)."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def report_folders(paths: list[Path], out: Path, wandb: dict | None = None) -> ResultsTable:
    """Build the table of ``paths``, write it into ``out``, print it and (``wandb``: project,
    group, offline) log it to W&B. Nothing is written when the folders hold no run at all."""
    results = ResultsTable.from_folders(paths)
    if results.table.empty and not results.problems:
        where = " ".join(map(str, paths))
        raise UserError(f"{where} holds no run (no .hydra/overrides.yaml below it): nothing to report")
    csv, md = results.save(out)
    print(f"Results of {len(paths) if len(paths) > 1 else paths[0]} (also in {csv} and {md}):\n\n"
          f"{results.to_markdown()}", flush=True)
    if wandb:
        results.log_to_wandb(save_dir=out, **wandb)
    return results


class ResultsTableCallback(Callback):
    """Hydra callback: at the end of a multirun, the results table of its sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        wandb = None
        logger = OmegaConf.select(config, "logger.wandb")
        if isinstance(logger, DictConfig) and "_target_" in logger:
            wandb = {"project": str(logger.project), "group": sweep_dir.name, "offline": bool(logger.offline)}
        try:
            results = report_folders([sweep_dir], sweep_dir, wandb)
        except Exception:  # noqa: BLE001 - the jobs' own results are safe; the table can be rebuilt
            log.exception("could not build the results table of %s; rebuild it with: asd-report %s",
                          sweep_dir, sweep_dir)
            return
        grid = OmegaConf.select(config, "hydra.sweeper._target_") == BASIC_SWEEPER
        if any(p.kind == "failed" or grid for p in results.problems):  # no success: say which jobs, exit non-zero
            message = (f"{len(results.problems)} job(s) of the multirun are not in the results table:\n" +
                       "\n".join(f"  {p}" for p in results.problems))
            log.error(message)
            print(f"asd-train: {message}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_SOME_LEFT_OUT)
