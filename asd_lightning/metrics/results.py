"""Clip scores → decisions, the official table and the files of a scored run.

Every scored run (a trained method's test, ``asd-eval``, ``asd-fuse``) writes the same folder:
``anomaly_score_*`` / ``decision_result_*`` CSVs, ``decision_thresholds.csv``, ``scores.csv`` /
``scores.json`` (when test clips are labelled), ``clip_scores.csv``: one row per test and fit
clip with its metadata and score, what score fusion reads, and ``data.json``: the data root and a
fingerprint of the scored test clips (their paths, sizes and modification times per machine
type), by which score fusion tells runs on other data apart. The decision threshold follows the
official baselines: per machine type, the ``decision_quantile`` quantile of a gamma distribution
fitted to the scores of that machine's fit (training) clips.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from asd_lightning.metrics.decision import gamma_threshold
from asd_lightning.metrics.official import ScoreReport, evaluate
from asd_lightning.metrics.submission import write_submission

log = logging.getLogger(__name__)

CLIP_SCORES = "clip_scores.csv"
DATA_RECORD = "data.json"
CLIP_COLUMNS = ["year", "machine", "section", "domain", "label", "split", "file", "score"]


@dataclass
class ScoredRun:
    """Test clips with ``score`` and ``decision``, fit clips with ``score`` (both with the
    :data:`CLIP_COLUMNS`), the threshold per machine type and the official report (None when
    no test clip is labelled)."""

    year: int
    test: pd.DataFrame
    fit: pd.DataFrame
    thresholds: dict[str, float]
    report: ScoreReport | None
    data: dict | None = None  # the data root and fingerprint (:func:`data_record`)

    def save(self, out_dir: str | Path) -> Path:
        """Write the run's files into ``out_dir``; returns it."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_submission(self.test, out_dir, self.year)
        pd.Series(self.thresholds, name="threshold").to_csv(out_dir / "decision_thresholds.csv")
        pd.concat([self.test[CLIP_COLUMNS], self.fit[CLIP_COLUMNS]], ignore_index=True).to_csv(
            out_dir / CLIP_SCORES, index=False)
        if self.report is not None:
            self.report.save(out_dir)
        if self.data is not None:
            (out_dir / DATA_RECORD).write_text(json.dumps(self.data, indent=2) + "\n")
        return out_dir


def data_record(root: str | Path, test: pd.DataFrame) -> dict:
    """The data a run scored: its root and, per machine type, a fingerprint of its test clips
    (``path`` relative to the root, size and modification time of each file)."""
    root = Path(root).expanduser().resolve()
    fingerprint = {}
    for machine, group in test.groupby("machine", sort=True):
        digest = hashlib.sha1()
        for path in sorted(group["path"].astype(str)):
            stat = Path(path).stat()
            name = Path(path).resolve()
            name = name.relative_to(root) if name.is_relative_to(root) else name
            digest.update(f"{name.as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        fingerprint[str(machine)] = digest.hexdigest()
    return {"root": str(root), "test_clips": fingerprint}


def decision_threshold(machine: str, fit_scores: np.ndarray, quantile: float) -> float:
    """The gamma threshold of ``machine``'s fit-clip scores; when they are all equal (nothing to
    fit: e.g. a collapsed encoder gives every fit clip distance 0 to its neighbours) that value,
    with a warning, so that the run still writes its scores and tables."""
    if len(fit_scores) > 1 and np.isfinite(fit_scores).all() and np.ptp(fit_scores) == 0:
        log.warning("%s: all %d fit-clip scores equal %g, no gamma distribution to fit; the decision "
                    "threshold is that value (check the encoder: its embeddings may have collapsed)",
                    machine, len(fit_scores), fit_scores[0])
        return float(fit_scores[0])
    return gamma_threshold(fit_scores, quantile)


def score_run(test: pd.DataFrame, fit: pd.DataFrame, year: int, decision_quantile: float = 0.9) -> ScoredRun:
    """Decide and evaluate: ``test`` and ``fit`` hold one row per clip with ``machine``,
    ``section``, ``domain``, ``label``, ``file`` and ``score`` (and ``split``)."""
    thresholds = {machine: decision_threshold(machine, group["score"].to_numpy(), decision_quantile)
                  for machine, group in fit.groupby("machine")}
    test = test.assign(year=int(year), decision=(test["score"] > test["machine"].map(thresholds)).astype(int))
    labelled = test[test["label"] != "unknown"]
    report = evaluate(labelled, year) if len(labelled) else None
    return ScoredRun(int(year), test.reset_index(drop=True), fit.assign(year=int(year)).reset_index(drop=True),
                     thresholds, report)
