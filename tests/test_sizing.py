"""Inlier models sized to their fit set: the rules by hand, and a small fit set in 128 dimensions
where the Table I GMM setting inverts the ranking and the guarded one does not."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asd_lightning.callbacks.inlier_model import InlierModelCallback
from asd_lightning.scoring import GMMInlier, KNNInlier
from asd_lightning.scoring.sizing import gmm_setting, neighbour_setting


def test_gmm_setting_by_hand() -> None:
    # a full covariance in 128 dimensions needs 256 embeddings per component
    assert gmm_setting(1024, 128, 4, "full") == ({"n_components": 4, "covariance_type": "full"}, "")
    used, reason = gmm_setting(600, 128, 4, "full")
    assert used == {"n_components": 2, "covariance_type": "full"}
    assert reason == "4 full-covariance component(s) in 128 dimensions need 256 per component, got 600 fit embeddings"
    # none fits: diagonal covariances, 10 embeddings each
    assert gmm_setting(60, 128, 16, "full")[0] == {"n_components": 6, "covariance_type": "diag"}
    assert gmm_setting(100, 128, 4, "tied")[0] == {"n_components": 4, "covariance_type": "diag"}
    assert gmm_setting(300, 128, 4, "tied") == ({"n_components": 4, "covariance_type": "tied"}, "")
    assert gmm_setting(35, 8, 8, "diag")[0] == {"n_components": 3, "covariance_type": "diag"}
    assert gmm_setting(6, 8, 2, "diag")[0] == {"n_components": 1, "covariance_type": "spherical"}
    assert neighbour_setting(7, 16, "n_neighbors") == (
        {"n_neighbors": 4}, "n_neighbors=16 on 7 fit embeddings: at most half of them (4) keeps the score local")
    assert neighbour_setting(7, 4, "k") == ({"k": 4}, "")
    with pytest.raises(ValueError, match="size_guard must be one of shrink, warn, error, got 'ignore'"):
        KNNInlier(size_guard="ignore")


def embeddings(rng: np.random.Generator, n: int, anomalous: bool) -> np.ndarray:
    """128-d embeddings: 8 dimensions of spread 1, 20 quiet ones (0.02) and 100 noisy ones (0.3).
    Anomalies are shifted by 5 standard deviations in the quiet dimensions and less noisy in the
    others: a Gaussian with per-dimension variances sees the shift, a model that cannot tell
    quiet from noisy dimensions sees only the smaller spread."""
    x = rng.normal(0.0, 0.1 if anomalous else 0.3, (n, 128))
    x[:, :8] = rng.normal(0.0, 1.0, (n, 8))
    x[:, 8:28] = rng.normal(0.1 if anomalous else 0.0, 0.02, (n, 20))
    return x


def test_small_fit_set_in_128_dimensions_inverts_the_table_i_gmm_but_not_the_guarded_one() -> None:
    rng = np.random.default_rng(0)
    fit = embeddings(rng, 60, anomalous=False)  # the held-out 10 % of a small section: 60 crop embeddings
    test = np.r_[embeddings(rng, 50, anomalous=False), embeddings(rng, 50, anomalous=True)]
    label = np.r_[np.zeros(50), np.ones(50)]
    # Table I (fan): 16 full-covariance components; each has about 4 embeddings in 128 dimensions
    as_asked = GMMInlier(n_components=16, covariance_type="full", size_guard="warn").fit(fit)
    assert roc_auc_score(label, as_asked.score(test)) < 0.2  # the ranking is inverted
    assert as_asked.sizing.too_small and as_asked.sizing.used == {"n_components": 16, "covariance_type": "full"}
    guarded = GMMInlier(n_components=16, covariance_type="full").fit(fit)
    assert roc_auc_score(label, guarded.score(test)) > 0.95
    assert guarded.sizing.used == {"n_components": 6, "covariance_type": "diag"}
    with pytest.raises(ValueError, match="GMMInlier: 16 full-covariance component.*got 60 fit embeddings; "
                                         "set callbacks.inlier.model.n_components"):
        GMMInlier(n_components=16, covariance_type="full", size_guard="error").fit(fit)


def test_the_callback_logs_and_records_what_it_shrank(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    fit = {i: embeddings(rng, 10, anomalous=False) for i in range(6)}  # 6 clips of 10 crops: 60 embeddings
    test = {6: embeddings(rng, 10, anomalous=False), 7: embeddings(rng, 10, anomalous=True)}
    clips = pd.DataFrame({"clip_id": range(8), "machine": "fan", "section": 0, "domain": "source",
                          "subset": ["val"] * 6 + ["test"] * 2})
    cb = InlierModelCallback(model=lambda: GMMInlier(n_components=16), fit_subset="val", aggregation="mean_above_median")
    with caplog.at_level(logging.WARNING):
        scores, _ = cb.score(clips, test, fit)
    assert scores.sort_values("clip_id")["score"].diff().iloc[-1] > 0  # the anomalous clip scores higher
    row = cb.sizing.iloc[0]
    assert (row["machine"], row["section"], row["domain"], row["fit_size"], row["dim"]) == ("fan", 0, "all", 60, 128)
    assert row["used"] == {"n_components": 6, "covariance_type": "diag"} and row["reason"]
    assert "fan section 00 (all): GMMInlier on 60 × 128: n_components 16 → 6, covariance_type full → diag" in caplog.text
    assert len(cb.sizing) == 1  # the cross-fitted fold models are not recorded


def test_a_collapsed_encoder_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from asd_lightning.scoring.section_fit import SectionFitter, collapsed

    rng = np.random.default_rng(0)
    point = rng.normal(size=16).astype(np.float32)
    one_point = {i: (point + 1e-7 * rng.normal(size=16)).astype(np.float32)[None] for i in range(6)}
    spread = {i: rng.normal(size=(1, 16)).astype(np.float32) for i in range(6)}
    assert collapsed(np.concatenate(list(one_point.values()))) and not collapsed(np.concatenate(list(spread.values())))
    fitter = SectionFitter(lambda: KNNInlier(k=1))
    with caplog.at_level(logging.WARNING, logger="asd_lightning.scoring.section_fit"):
        fitter.fit(spread, list(spread), list(spread), {i: "source" for i in spread})
        assert not caplog.records
        fitter.fit(one_point, list(one_point), list(one_point), {i: "source" for i in one_point})
    assert "collapsed encoder" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asd_lightning.scoring.section_fit"):  # standardising hides no collapse
        SectionFitter(lambda: KNNInlier(k=1), standardize=True).fit(one_point, list(one_point), list(one_point),
                                                                    {i: "source" for i in one_point})
    assert "collapsed encoder" in caplog.text
