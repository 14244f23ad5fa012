"""Decision threshold of the official DCASE baselines: a gamma quantile of training scores."""

from __future__ import annotations

import numpy as np
import scipy.stats


def gamma_threshold(train_scores, quantile: float = 0.9) -> float:
    """Fit ``scipy.stats.gamma.fit`` to training-clip scores and return ``gamma.ppf(quantile)``.

    As in the official baselines, shape, location and scale are all fitted. Scores that are not
    all positive (e.g. negative log-likelihoods or z-scores) are first shifted so that their
    minimum becomes 1 % of their range; the threshold is shifted back, so it is in the units of
    the input scores. A constant input has no spread to fit and raises ``ValueError``.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    scores = np.asarray(train_scores, dtype=float).ravel()
    if scores.size < 2 or not np.isfinite(scores).all():
        raise ValueError("gamma_threshold needs at least 2 finite training scores")
    spread = float(np.ptp(scores))
    if spread == 0.0:
        raise ValueError(f"all {scores.size} training scores equal {scores[0]}: cannot fit a gamma distribution")
    shift = 0.0 if scores.min() > 0 else float(scores.min()) - 0.01 * spread
    shape, loc, scale = scipy.stats.gamma.fit(scores - shift)
    return float(scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale)) + shift
