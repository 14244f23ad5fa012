"""Official DCASE Task 2 scores, submission CSVs and the gamma decision threshold."""

from asd_lightning.metrics.decision import gamma_threshold
from asd_lightning.metrics.official import (
    EPS,
    ScoreReport,
    evaluate,
    hmean,
    official_columns,
    official_statistic,
    score_columns,
)
from asd_lightning.metrics.results import CLIP_SCORES, ScoredRun, score_run
from asd_lightning.metrics.submission import read_submission, submission_filename, write_submission

__all__ = [
    "CLIP_SCORES",
    "EPS",
    "ScoreReport",
    "ScoredRun",
    "evaluate",
    "gamma_threshold",
    "hmean",
    "official_columns",
    "official_statistic",
    "read_submission",
    "score_columns",
    "score_run",
    "submission_filename",
    "write_submission",
]
