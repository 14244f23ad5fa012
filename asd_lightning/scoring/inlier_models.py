"""Inlier models: fitted on embeddings of normal clips, they score new embeddings.

Every model has ``fit(x)`` (``[N, D]`` normal embeddings) and ``score(x)`` (``[M, D]`` →
``[M]``, higher = more anomalous). GMM and LOF are scikit-learn's; k-NN runs in torch
(``torch.cdist``), on the GPU when the embeddings are there.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor


class InlierModel(Protocol):
    def fit(self, x) -> "InlierModel": ...

    def score(self, x) -> np.ndarray: ...


def _matrix(x, what: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"{what} must be a non-empty [N, D] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return x.astype(np.float64)


class GMMInlier:
    """Gaussian mixture; score = negative log-likelihood."""

    def __init__(self, n_components: int = 1, covariance_type: str = "full", reg_covar: float = 1e-6,
                 max_iter: int = 100, seed: int = 0) -> None:
        self.params = dict(n_components=n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                           max_iter=max_iter, random_state=seed)
        self.model: GaussianMixture | None = None

    def fit(self, x) -> "GMMInlier":
        x = _matrix(x, "training embeddings")
        if len(x) < self.params["n_components"]:
            raise ValueError(f"GMM with {self.params['n_components']} components needs at least as many "
                             f"training embeddings, got {len(x)}")
        self.model = GaussianMixture(**self.params).fit(x)
        return self

    def score(self, x) -> np.ndarray:
        return -self.model.score_samples(_matrix(x, "embeddings"))


class LOFInlier:
    """Local outlier factor (novelty mode); score = the LOF (about 1 for inliers)."""

    def __init__(self, n_neighbors: int = 20, metric: str = "minkowski") -> None:
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.model: LocalOutlierFactor | None = None

    def fit(self, x) -> "LOFInlier":
        x = _matrix(x, "training embeddings")
        if len(x) < 2:
            raise ValueError(f"LOF needs at least 2 training embeddings, got {len(x)}")
        k = min(self.n_neighbors, len(x) - 1)
        self.model = LocalOutlierFactor(n_neighbors=k, metric=self.metric, novelty=True).fit(x)
        return self

    def score(self, x) -> np.ndarray:
        return -self.model.score_samples(_matrix(x, "embeddings"))


class KNNInlier:
    """Mean distance to the ``k`` nearest training embeddings (``euclidean`` or ``cosine``)."""

    def __init__(self, k: int = 1, metric: str = "euclidean", chunk: int = 4096) -> None:
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"k-NN metric must be euclidean or cosine, got {metric!r}")
        self.k = k
        self.metric = metric
        self.chunk = chunk
        self.bank: torch.Tensor | None = None

    def _prepare(self, x) -> torch.Tensor:
        x = x.detach().double() if isinstance(x, torch.Tensor) else torch.from_numpy(_matrix(x, "embeddings"))
        return torch.nn.functional.normalize(x, dim=1) if self.metric == "cosine" else x

    def fit(self, x) -> "KNNInlier":
        _matrix(x, "training embeddings")
        self.bank = self._prepare(x)
        return self

    def _distances(self, part: torch.Tensor) -> torch.Tensor:
        return 1.0 - part @ self.bank.T if self.metric == "cosine" else torch.cdist(part, self.bank)

    def score(self, x) -> np.ndarray:
        x = self._prepare(x).to(self.bank.device)
        k = min(self.k, len(self.bank))
        out = [self._distances(part).topk(k, dim=1, largest=False).values.mean(dim=1) for part in x.split(self.chunk)]
        return torch.cat(out).cpu().numpy()
