"""Optimisers and LR schedules the papers use that torch does not ship."""

from asd_lightning.optim.lars import LARS, exclude_bias_and_norm
from asd_lightning.optim.schedules import WarmupCosine

__all__ = ["LARS", "WarmupCosine", "exclude_bias_and_norm"]
