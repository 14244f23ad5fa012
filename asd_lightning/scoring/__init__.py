"""Embeddings → anomaly scores: inlier models fitted on normal embeddings, and clip aggregation."""

from asd_lightning.scoring.aggregation import AGGREGATORS, aggregate_segments
from asd_lightning.scoring.inlier_models import GMMInlier, InlierModel, KNNInlier, LOFInlier

__all__ = ["AGGREGATORS", "GMMInlier", "InlierModel", "KNNInlier", "LOFInlier", "aggregate_segments"]
