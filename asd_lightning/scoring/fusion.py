"""Score fusion: finished runs' clip scores on the same data → one scored run.

Each run's scores are z-scored per section by the mean and standard deviation of that run's own
fit-clip scores (``split == train`` rows of its ``clip_scores.csv``), so that detectors with
other units (distances, log-likelihoods, reconstruction errors) weigh alike; the fused score of a
clip is the weighted mean of its z-scores. The fit clips' fused scores give the decision
thresholds, as for any run. Nothing is re-run: only the saved scores are read.

Inlier-callback runs save cross-fitted fit-clip scores (each fit clip scored by a model fitted
without it); methods that score clips themselves (the autoencoder) score their training clips
in-sample, which makes their z-scores of test clips larger. The weights can make up for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from asd_lightning.metrics.results import CLIP_COLUMNS, CLIP_SCORES, DATA_RECORD, ScoredRun, score_run
from asd_lightning.utils.errors import UserError

KEY = ["machine", "section", "file"]


FUSION_RECORD = "fusion.json"  # what makes a folder a fused result (asd-fuse --out)


def is_run_folder(folder: Path) -> bool:
    """A training / evaluation run's folder (its scores are in ``submission/``)."""
    return (folder / ".hydra").is_dir() or (folder / "submission" / CLIP_SCORES).is_file()


def is_fused(folder: Path) -> bool:
    """A folder asd-fuse wrote: ``fusion.json`` next to the fused scores."""
    return (folder / FUSION_RECORD).is_file()


def clip_scores_file(run: str | Path) -> Path:
    """``clip_scores.csv`` of a run folder (always its ``submission/``), of a fused result
    folder, of a run's ``submission/`` folder, or the file itself."""
    run = Path(run)
    if run.is_file():
        return run
    if is_run_folder(run) and not is_fused(run):
        candidates = [run / "submission" / CLIP_SCORES]  # never a stray file at the run's top level
    else:
        candidates = [run / CLIP_SCORES]
    for path in candidates:
        if path.is_file():
            return path
    if not run.exists():
        raise FileNotFoundError(f"{run}: no such run folder")
    raise FileNotFoundError(f"{run}: no {CLIP_SCORES} here or in submission/ (runs scored before score "
                            "fusion existed do not save one: score the checkpoint again with asd-eval)")


def check_output_folder(out: str | Path) -> None:
    """Refuse an output folder that holds a run's results (a run folder, its ``submission/``):
    fused scores go into a folder of their own (an earlier fused result may be replaced)."""
    out = Path(out)
    if is_fused(out) or not out.exists():
        return
    if is_run_folder(out) or (out.name == "submission" and is_run_folder(out.parent)):
        raise UserError(f"--out {out} is a run's folder; fused scores there would overwrite or be mistaken for "
                        "the run's own: pass --out <a new folder>")
    taken = [name for name in (CLIP_SCORES, "scores.json", "scores.csv") if (out / name).exists()]
    if taken:
        raise UserError(f"--out {out} already holds {', '.join(taken)} of a run (no {FUSION_RECORD}), which "
                        "fusing there would overwrite: pass --out <a new folder>")


def read_data_record(run: str | Path) -> dict | None:
    """The data root and fingerprint saved next to a run's ``clip_scores.csv`` (None for runs
    scored before they were recorded)."""
    path = clip_scores_file(run).with_name(DATA_RECORD)
    return json.loads(path.read_text()) if path.is_file() else None


def check_same_data(names: Sequence[str], records: Sequence[dict | None]) -> list[str]:
    """Raise when two runs scored test clips of another dataset (their fingerprints differ for a
    machine type both scored); returns warnings for runs that recorded no data."""
    warnings = [f"{name} records no data fingerprint ({DATA_RECORD}; scored by an older version): it is assumed "
                "to have scored the same data" for name, record in zip(names, records) if record is None]
    known = [(n, r) for n, r in zip(names, records) if r is not None]
    for name, record in known[1:]:
        first, reference = known[0]
        for machine in sorted(record["test_clips"].keys() & reference["test_clips"].keys()):
            if record["test_clips"][machine] != reference["test_clips"][machine]:
                raise UserError(f"{name} scored other data than {first}: the {machine} test clips under "
                                f"{record['root']} and {reference['root']} differ (names, sizes or modification "
                                "times); fuse runs on the same data")
    return warnings


def read_clip_scores(run: str | Path) -> pd.DataFrame:
    """A run's test and fit clip scores, checked: the :data:`CLIP_COLUMNS`, one row per clip."""
    path = clip_scores_file(run)
    table = pd.read_csv(path, dtype={"label": str, "domain": str, "split": str})
    missing = [c for c in CLIP_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if not np.isfinite(table["score"]).all():
        raise ValueError(f"{path}: scores must be finite numbers")
    twice = table[table.duplicated(KEY)]
    if len(twice):
        raise ValueError(f"{path}: clip {twice.iloc[0]['machine']}/{twice.iloc[0]['file']} appears twice")
    return table


def zscored(scores: pd.DataFrame) -> pd.Series:
    """Every clip's score standardised by its section's fit-clip scores (standard deviation 1
    where they are constant)."""
    fit = scores[scores["split"] == "train"]
    stats = fit.groupby(["machine", "section"])["score"].agg(mean="mean", std=lambda s: s.std(ddof=0))
    stats["std"] = stats["std"].where(stats["std"] > 0, 1.0)
    joined = scores.join(stats, on=["machine", "section"])
    if joined["mean"].isna().any():
        where = joined[joined["mean"].isna()].iloc[0]
        raise ValueError(f"{where['machine']} section {int(where['section']):02d} has no fit-clip scores to z-score by")
    return (joined["score"] - joined["mean"]) / joined["std"]


def _keys(table: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, table[KEY].itertuples(index=False)))


def _different(name: str, first: str, a: set, b: set) -> ValueError:
    diff = sorted(a ^ b)
    listed = ", ".join(f"{m}/section_{int(s):02d}/{f}" for m, s, f in diff[:5])
    return ValueError(f"{name} did not score the same test clips as {first}: {len(diff)} differ ({listed}"
                      f"{', ...' if len(diff) > 5 else ''})")


def fuse(runs: Sequence[pd.DataFrame], weights: Sequence[float] | None = None, names: Sequence[str] | None = None,
         decision_quantile: float = 0.9) -> ScoredRun:
    """Fuse the clip scores of ``runs`` (tables of :func:`read_clip_scores`): weighted mean of the
    per-section z-scores. The runs must have scored the same test clips of the same year; fit
    clips scored by every run give the thresholds."""
    names = list(names or [f"run {i}" for i in range(len(runs))])
    weights = np.ones(len(runs)) if weights is None else np.asarray(weights, dtype=float)
    if len(runs) < 2:
        raise ValueError(f"fusion needs at least 2 runs, got {len(runs)}")
    if len(weights) != len(runs) or not (weights > 0).all():
        raise ValueError(f"give one positive weight per run: {len(runs)} runs, weights {list(weights)}")
    years = {int(y) for run in runs for y in run["year"].unique()}
    if len(years) != 1:
        raise ValueError(f"the runs scored data of different years: {sorted(years)}")
    tests = [run[run["split"] == "test"] for run in runs]
    for name, test in zip(names[1:], tests[1:]):
        if _keys(test) != _keys(tests[0]):
            raise _different(name, names[0], _keys(test), _keys(tests[0]))
    z = [run.assign(score=zscored(run)).set_index(KEY)["score"] for run in runs]
    fused = sum(w * s for w, s in zip(weights, z)) / weights.sum()  # NaN where a run lacks the clip
    base = runs[0].set_index(KEY)
    table = base.assign(score=fused.reindex(base.index)).reset_index()
    fit = table[(table["split"] == "train") & table["score"].notna()]
    absent = sorted(set(tests[0]["machine"]) - set(fit["machine"]))
    if absent:
        raise ValueError(f"no fit clip of {absent} was scored by every run: nothing to set the decision thresholds by")
    return score_run(table[table["split"] == "test"], fit, years.pop(), decision_quantile)
