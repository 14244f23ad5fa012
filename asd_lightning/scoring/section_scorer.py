"""The fitted scoring of one section: inlier model(s), clip aggregation and standardisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from asd_lightning.scoring.aggregation import aggregate_segments
from asd_lightning.scoring.inlier_models import InlierModel
from asd_lightning.scoring.sizing import Sizing


def embedding_rows(clips: Sequence[np.ndarray], aggregation: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows to score for clips of ``[S, D]`` segment embeddings: the clip means
    (``embedding_mean``) or every segment; plus the clip index of each row."""
    if aggregation == "embedding_mean":
        return np.stack([c.mean(axis=0) for c in clips]), np.arange(len(clips))
    return np.concatenate(list(clips)), np.repeat(np.arange(len(clips)), [len(c) for c in clips])


def clip_scores(row_scores: np.ndarray, owner: np.ndarray, n: int, aggregation: str) -> np.ndarray:
    """Row scores → one score per clip (identity for ``embedding_mean``)."""
    if aggregation == "embedding_mean":
        return np.asarray(row_scores, dtype=np.float64)
    counts = np.bincount(owner, minlength=n)
    if len(set(counts)) == 1:  # equal segment counts: one [clips, segments] aggregation
        return aggregate_segments(row_scores.reshape(n, -1), aggregation).numpy()
    return np.array([aggregate_segments(row_scores[owner == c][None], aggregation).item() for c in range(n)])


@dataclass
class SectionScorer:
    """Scores clips of one section: embeddings standardised by ``center`` / ``scale`` when set,
    then the minimum over ``models`` (one, or one per domain) of the aggregated clip scores,
    each first standardised by its ``model_scale`` if given, then ``(score - mean) / std``
    (identity unless z-scored). ``sizing``: what each model was asked for and used."""

    models: list[InlierModel]
    aggregation: str = "embedding_mean"
    mean: float = 0.0
    std: float = 1.0
    domains: list[str] = field(default_factory=list)  # the domain of each model, if per domain
    model_scale: list[tuple[float, float]] = field(default_factory=list)  # (mean, std) per model
    center: np.ndarray | None = None  # per-dimension embedding standardisation (fit clips)
    scale: np.ndarray | None = None
    sizing: list[Sizing] = field(default_factory=list)

    def standardized(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``[S, D]`` segment embeddings in the units the models were fitted in."""
        if self.center is None:
            return list(clips)
        return [(np.asarray(c, dtype=np.float64) - self.center) / self.scale for c in clips]

    def per_model(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Clip scores by each model, standardised by its ``model_scale`` if given."""
        rows, owner = embedding_rows(self.standardized(clips), self.aggregation)
        scores = [clip_scores(m.score(rows), owner, len(clips), self.aggregation) for m in self.models]
        if self.model_scale:
            scores = [(s - mean) / std for s, (mean, std) in zip(scores, self.model_scale)]
        return scores

    def raw(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return np.min(self.per_model(clips), axis=0)

    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of clips given as ``[S, D]`` segment embeddings."""
        return (self.raw(clips) - self.mean) / self.std
