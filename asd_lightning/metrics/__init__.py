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
from asd_lightning.metrics.submission import read_submission, submission_filename, write_submission

__all__ = [
    "EPS",
    "ScoreReport",
    "evaluate",
    "gamma_threshold",
    "hmean",
    "official_columns",
    "official_statistic",
    "read_submission",
    "score_columns",
    "submission_filename",
    "write_submission",
]
