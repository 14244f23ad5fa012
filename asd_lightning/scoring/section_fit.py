"""Fit one section's scorer on its fit clips' embeddings (the inlier callback calls it per section).

1. ``standardize``: centre and scale every embedding dimension by the section's fit clips (all
   domains together; see :func:`standardizer`), so that no dimension dominates the distances
   by its units alone;
2. one inlier model on the fit clips, or with ``per_domain`` one per domain, a clip's score being
   the minimum; ``model_zscore`` first puts each domain model on the scale of its own fit clips'
   (cross-fitted) scores, so that a sparse domain (DCASE: 10 target clips against 990 source
   clips) is not scored as anomalous just for being sparse. A domain with fewer than
   ``MIN_ZSCORE_CLIPS`` fit clips cannot be put on a scale: the section then gets one pooled
   model, and the record says so;
   ``memory_mixup`` (``{neighbours, lam}``) enlarges the target model's memory with mixes of the
   target clips and their nearest source clips (:mod:`~asd_lightning.scoring.memory_mixup`);
3. the fit clips' own scores from models with the same setting fitted without them
   (``threshold_folds`` folds of whole clips), for the decision thresholds and ``zscore``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from asd_lightning.scoring.inlier_models import InlierModel
from asd_lightning.scoring.memory_mixup import memory_mixup
from asd_lightning.scoring.section_scorer import SectionScorer, embedding_rows
from asd_lightning.scoring.sizing import Sizing

STD_FLOOR = 0.01
MIN_ZSCORE_CLIPS = 3
COLLAPSE_RATIO = 1e-5

log = logging.getLogger(__name__)


def collapsed(rows: np.ndarray) -> bool:
    """Whether ``[N, D]`` rows (N ≥ 2) are one point up to float32 rounding: the largest spread
    of any dimension is below ``COLLAPSE_RATIO`` of the largest magnitude (an encoder that
    maps every fit clip to the same embedding, e.g. a classifier's BatchNorm statistics after
    a few steps); their scores, and any z-score of them, are rounding noise."""
    scale = float(np.abs(rows).max()) if rows.size else 0.0
    return len(rows) > 1 and float(rows.std(axis=0).max()) <= COLLAPSE_RATIO * max(scale, 1e-12)


def standardizer(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of ``[N, D]`` rows, the deviation floored at
    ``STD_FLOOR`` of its mean over dimensions (a dimension constant in the fit clips would
    otherwise weigh without bound); scale 1 where every dimension is constant."""
    std = rows.std(axis=0)
    floor = STD_FLOOR * std.mean()
    return rows.mean(axis=0), (np.maximum(std, floor) if floor > 0 else np.ones_like(std))


@dataclass
class SectionFitter:
    """How a section's scorer is fitted (see the module docstring); :meth:`fit` fits one."""

    model_factory: Callable[[], InlierModel]
    aggregation: str = "embedding_mean"
    fit_domains: Sequence[str] = ("source", "target")
    per_domain: bool = False
    model_zscore: bool = False
    zscore: bool = False
    standardize: bool = False
    threshold_folds: int = 5
    memory_mixup: dict | None = None  # {neighbours, lam}: target memory mixed with nearest source clips

    def domain_groups(self, used: list[int], domain_of: dict[int, str],
                      dim: int) -> tuple[list[str], list[list[int]], list[Sizing]]:
        """The domains of the models (empty: one pooled model), their clips, and the record of
        a per-domain setting that the fit set could not carry."""
        if not self.per_domain:
            return [], [used], []
        domains = [d for d in self.fit_domains if any(domain_of[i] == d for i in used)]
        groups = [[i for i in used if domain_of[i] == d] for d in domains]
        few = {d: len(g) for d, g in zip(domains, groups) if len(g) < MIN_ZSCORE_CLIPS}
        if not (self.model_zscore and few):
            return domains, groups, []
        reason = (", ".join(f"{d} has {n} fit clip(s)" for d, n in few.items())
                  + f"; a z-scored domain model needs {MIN_ZSCORE_CLIPS}")
        return [], [used], [Sizing("per-domain models", len(used), dim, {"per_domain": True}, {"per_domain": False},
                                   reason=reason)]

    def fit(self, fit: dict[int, np.ndarray], section_fit: list[int], used: list[int],
            domain_of: dict[int, str]) -> tuple[SectionScorer, np.ndarray]:
        """Fit the section's scorer on the clips ``used`` (``clip_id`` → ``[S, D]`` in ``fit``);
        return it and the scores of all its ``section_fit`` clips, those the models were fitted
        on cross-fitted by clip."""
        rows = embedding_rows([fit[i] for i in used], self.aggregation)[0]
        if collapsed(rows):  # on the encoder's own embeddings: standardising would spread rounding noise
            log.warning("the %d fit clips' embeddings are one point up to rounding (collapsed encoder): "
                        "this section's scores are noise; train longer or check the encoder", len(used))
        center = scale = None
        if self.standardize:
            center, scale = standardizer(rows)
            fit = {i: (fit[i] - center) / scale for i in section_fit}
        dim = rows.shape[-1]
        domains, groups, sizing = self.domain_groups(used, domain_of, dim)
        position = {clip: j for j, clip in enumerate(section_fit)}
        fit_scores, models, model_scale = [], [], []
        for domain, members in zip(domains or ["all"], groups):
            memory = self.memory(fit, domain, dict(zip(domains, groups)))
            model = self.model_factory().fit(memory(members))
            if model.sizing is not None:
                sizing.append(model.sizing.of_domain(domain))
            scores = SectionScorer([model], self.aggregation).raw([fit[i] for i in section_fit])
            for clip, score in self.cross_fitted(fit, members, model, memory).items():
                scores[position[clip]] = score
            if self.model_zscore:
                own = scores[[position[clip] for clip in members]]
                model_scale.append((float(own.mean()), float(own.std() or 1.0)))
                scores = (scores - model_scale[-1][0]) / model_scale[-1][1]
            models.append(model)
            fit_scores.append(scores)
        scorer = SectionScorer(models, self.aggregation, domains=domains, model_scale=model_scale,
                               center=center, scale=scale, sizing=sizing)
        fit_clip = np.min(fit_scores, axis=0)
        if self.zscore:
            scorer.mean, scorer.std = float(fit_clip.mean()), float(fit_clip.std() or 1.0)
        return scorer, (fit_clip - scorer.mean) / scorer.std

    def memory(self, fit: dict[int, np.ndarray], domain: str,
               groups: dict[str, list[int]]) -> Callable[[list[int]], np.ndarray]:
        """What a ``domain`` model is fitted on for given clips: their rows, and with
        ``memory_mixup`` for the target model also their mixes with the nearest source rows."""
        rows = lambda ids: embedding_rows([fit[i] for i in ids], self.aggregation)[0]  # noqa: E731
        if not (self.memory_mixup and domain == "target" and groups.get("source")):
            return rows
        source = rows(groups["source"])
        return lambda ids: memory_mixup(rows(ids), source, **self.memory_mixup)

    def cross_fitted(self, fit: dict[int, np.ndarray], members: list[int], model: InlierModel,
                     memory: Callable[[list[int]], np.ndarray] | None = None) -> dict[int, float]:
        """Scores of ``members`` by models of ``model``'s setting fitted without them:
        ``threshold_folds`` folds of whole clips (every window of a clip leaves together). A
        lone clip keeps its in-sample score."""
        folds = min(self.threshold_folds, len(members))
        if folds < 2:
            return {}
        out: dict[int, float] = {}
        for f in range(folds):
            held = members[f::folds]
            rest = [i for i in members if i not in set(held)]
            fold_model = model.same_setting().fit(memory(rest) if memory else
                                                  embedding_rows([fit[i] for i in rest], self.aggregation)[0])
            out.update(zip(held, SectionScorer([fold_model], self.aggregation).raw([fit[i] for i in held])))
        return out
