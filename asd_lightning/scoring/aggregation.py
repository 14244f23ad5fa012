"""Segment scores of a clip → one clip score."""

from __future__ import annotations

from typing import Callable

import torch


def mean_above_median(scores: torch.Tensor) -> torch.Tensor:
    """Mean of the segment scores at or above the clip's median (two-BCE paper, GMM); the
    median of an even count is the mean of the two middle scores, so 10 crops keep the top 5."""
    median = scores.quantile(0.5, dim=-1, keepdim=True)
    keep = scores >= median
    return (scores * keep).sum(dim=-1) / keep.sum(dim=-1)


def mean_below_median(scores: torch.Tensor) -> torch.Tensor:
    """Mean of the ``ceil(S / 2)`` lowest of ``S`` segment scores: the least anomalous half (10
    crops: the 5 lowest). The two-BCE authors' code scores a clip this way: it averages the upper
    half of the crops' GMM log-likelihoods (``sorted(ll)[S // 2:]``) and negates it; on negative
    log-likelihoods that is this mean (see ``conf/experiment/two_bce.yaml``)."""
    lowest = scores.sort(dim=-1).values[..., : (scores.shape[-1] + 1) // 2]
    return lowest.mean(dim=-1)


AGGREGATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda s: s.mean(dim=-1),
    "max": lambda s: s.max(dim=-1).values,
    "median": lambda s: s.quantile(0.5, dim=-1),
    "mean_above_median": mean_above_median,
    "mean_below_median": mean_below_median,
}


def aggregate_segments(scores, how: str = "mean") -> torch.Tensor:
    """``[B, S]`` segment scores → ``[B]`` clip scores by ``mean``, ``max``, ``median``,
    ``mean_above_median`` or ``mean_below_median``."""
    if how not in AGGREGATORS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATORS)}")
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.dim() != 2 or scores.shape[1] == 0:
        raise ValueError(f"segment scores must be [clips, segments] with segments >= 1, got {tuple(scores.shape)}")
    return AGGREGATORS[how](scores)
