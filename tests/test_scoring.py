"""Inlier models and segment aggregation against small hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asd_lightning.scoring import GMMInlier, KNNInlier, LOFInlier, aggregate_segments


def test_aggregations_by_hand() -> None:
    scores = torch.tensor([[1.0, 5.0, 3.0, 2.0], [4.0, 4.0, 4.0, 9.0], [7.0, 1.0, 4.0, 0.0]])
    assert aggregate_segments(scores, "mean").tolist() == [2.75, 5.25, 3.0]
    assert aggregate_segments(scores, "max").tolist() == [5.0, 9.0, 7.0]
    assert aggregate_segments(scores, "median").tolist() == [2.5, 4.0, 2.5]
    # at or above the median: {5, 3}; {4, 4, 4, 9}; {7, 4}
    assert aggregate_segments(scores, "mean_above_median").tolist() == [4.0, 5.25, 5.5]
    assert aggregate_segments(torch.tensor([[1.0, 2.0, 9.0]]), "mean_above_median").tolist() == [5.5]
    with pytest.raises(ValueError, match="unknown aggregation 'sum'"):
        aggregate_segments(scores, "sum")
    with pytest.raises(ValueError, match="clips, segments"):
        aggregate_segments(torch.zeros(3), "mean")


def test_knn_mean_distance_by_hand() -> None:
    bank = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    test = np.array([[0.0, 0.0], [3.0, 4.0]])
    one = KNNInlier(k=1).fit(bank).score(test)
    assert one.tolist() == pytest.approx([0.0, 3.0])  # (3,4) is 3 from (0,4), 4 from (3,0), 5 from (0,0)
    two = KNNInlier(k=2).fit(bank).score(test)
    assert two.tolist() == pytest.approx([1.5, 3.5])
    # k=10 on 3 fit embeddings: shrunk to half of them rounded up (2), or as asked (capped at 3) with a warning
    shrunk = KNNInlier(k=10).fit(bank)
    assert shrunk.score(test).tolist() == pytest.approx([1.5, 3.5])
    assert (shrunk.sizing.requested, shrunk.sizing.used, shrunk.sizing.fit_size) == ({"k": 10}, {"k": 2}, 3)
    warned = KNNInlier(k=10, size_guard="warn").fit(bank)
    assert warned.score(test).tolist() == pytest.approx([7 / 3, 4.0])
    assert warned.sizing.used == {"k": 10} and "at most half of them (2)" in warned.sizing.reason
    assert KNNInlier(k=2).fit(bank).sizing.reason == ""  # 2 of 3 is at most half, rounded up
    with pytest.raises(ValueError, match=r"KNNInlier: k=10 on 3 fit embeddings.*callbacks.inlier.model.k"):
        KNNInlier(k=10, size_guard="error").fit(bank)
    cosine = KNNInlier(k=1, metric="cosine").fit(np.array([[1.0, 0.0]])).score(np.array([[1.0, 1.0], [0.0, 2.0]]))
    assert cosine.tolist() == pytest.approx([1 - 1 / math.sqrt(2), 1.0])
    assert KNNInlier(k=1).fit(torch.tensor(bank)).score(torch.tensor(test)).tolist() == pytest.approx([0.0, 3.0])
    assert KNNInlier(k=1, chunk=1).fit(bank).score(test).tolist() == pytest.approx([0.0, 3.0])  # chunked


def test_gmm_is_the_negative_gaussian_log_likelihood() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal([1.0, -2.0], [0.5, 2.0], size=(4000, 2))
    test = np.array([[1.0, -2.0], [3.0, 2.0]])
    scores = GMMInlier(n_components=1, covariance_type="diag").fit(train).score(test)
    mean, std = train.mean(0), train.std(0)
    expected = -(-0.5 * ((test - mean) / std) ** 2 - np.log(std * math.sqrt(2 * math.pi))).sum(1)
    assert scores.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    with pytest.raises(ValueError, match="at least as many"):
        GMMInlier(n_components=8, size_guard="warn").fit(train[:4])
    # shrunk: a full covariance in 2 dimensions needs 4 embeddings, so 4 carry one component
    assert GMMInlier(n_components=8).fit(train[:4]).sizing.used == {"n_components": 1, "covariance_type": "full"}


def test_lof_flags_the_isolated_point() -> None:
    grid = np.array([[x, y] for x in range(5) for y in range(5)], dtype=float)
    scores = LOFInlier(n_neighbors=5).fit(grid).score(np.array([[2.0, 2.0], [2.5, 2.5], [20.0, 20.0]]))
    assert scores[0] == pytest.approx(1.0, abs=0.15) and scores[1] < 1.5
    assert scores[2] > 5.0
    small = LOFInlier(n_neighbors=50).fit(grid[:5])  # at most half the fit set, rounded up
    assert small.model.n_neighbors_ == 3 and small.sizing.used == {"n_neighbors": 3}
    assert LOFInlier(n_neighbors=50, size_guard="warn").fit(grid[:3]).model.n_neighbors_ == 2  # capped at N - 1


def test_bad_embeddings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        KNNInlier().fit(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        GMMInlier().fit(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="euclidean or cosine"):
        KNNInlier(metric="manhattan")
