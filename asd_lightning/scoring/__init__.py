"""Embeddings → anomaly scores: inlier models fitted on normal embeddings and sized to them
(:mod:`.sizing`), a section's fitted scoring (:mod:`.section_fit`, :mod:`.section_scorer`), clip
aggregation, and the fusion of finished runs' scores (:mod:`.fusion`)."""

from asd_lightning.scoring.aggregation import AGGREGATORS, aggregate_segments
from asd_lightning.scoring.inlier_models import GMMInlier, InlierModel, KNNInlier, LOFInlier

__all__ = ["AGGREGATORS", "GMMInlier", "InlierModel", "KNNInlier", "LOFInlier", "aggregate_segments"]
