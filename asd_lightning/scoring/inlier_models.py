"""Inlier models: fitted on embeddings of normal clips, they score new embeddings.

Every model has ``fit(x)`` (``[N, D]`` normal embeddings) and ``score(x)`` (``[M, D]`` →
``[M]``, higher = more anomalous). GMM and LOF are scikit-learn's; k-NN runs in torch
(``torch.cdist``), on the GPU when the embeddings are there.

Each model is sized to its fit set (:mod:`.sizing`): ``size_guard=shrink`` (default) fits a
smaller setting when the fit set is too small for the one asked for, ``warn`` fits as asked,
``error`` raises; ``sizing`` records what was asked, what was used and why.
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor

from asd_lightning.scoring.sizing import SizeGuard, Sizing, gmm_setting, neighbour_setting


class InlierModel(Protocol):
    def fit(self, x) -> "InlierModel": ...

    def score(self, x) -> np.ndarray: ...

    @property
    def sizing(self) -> Sizing | None: ...

    def same_setting(self) -> "InlierModel": ...


def _matrix(x, what: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"{what} must be a non-empty [N, D] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return x.astype(np.float64)


class _Sized:
    """``size_guard`` and the :class:`~asd_lightning.scoring.sizing.Sizing` of the last fit."""

    def __init__(self, size_guard: str) -> None:
        self.guard = SizeGuard(size_guard)

    @property
    def sizing(self) -> Sizing | None:
        return self.guard.last

    def same_setting(self):
        """An unfitted copy that fits with the setting this model's last fit used, on any fit set:
        the cross-fitted scores of the fit clips must come from the setting the test clips get."""
        clone = copy.copy(self)  # fit() replaces the fitted state, never changes shared settings
        clone.guard = SizeGuard(self.guard.policy, fixed=self.sizing.used if self.sizing else None)
        return clone


class GMMInlier(_Sized):
    """Gaussian mixture; score = negative log-likelihood. Sized by :func:`~.sizing.gmm_setting`."""

    def __init__(self, n_components: int = 1, covariance_type: str = "full", reg_covar: float = 1e-6,
                 max_iter: int = 100, seed: int = 0, size_guard: str = "shrink") -> None:
        super().__init__(size_guard)
        self.params = dict(n_components=n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                           max_iter=max_iter, random_state=seed)
        self.model: GaussianMixture | None = None

    def fit(self, x) -> "GMMInlier":
        x = _matrix(x, "training embeddings")
        asked = {k: self.params[k] for k in ("n_components", "covariance_type")}
        hint = "set callbacks.inlier.model.n_components or callbacks.inlier.model.covariance_type=diag"
        used = self.guard.resolve("GMMInlier", *x.shape, asked, *gmm_setting(*x.shape, **asked), hint=hint)
        if len(x) < used["n_components"]:
            raise ValueError(f"GMM with {used['n_components']} components needs at least as many "
                             f"training embeddings, got {len(x)}")
        self.model = GaussianMixture(**{**self.params, **used}).fit(x)
        return self

    def score(self, x) -> np.ndarray:
        return -self.model.score_samples(_matrix(x, "embeddings"))


class LOFInlier(_Sized):
    """Local outlier factor (novelty mode); score = the LOF (about 1 for inliers). At most half
    the fit set as neighbours (:func:`~.sizing.neighbour_setting`)."""

    def __init__(self, n_neighbors: int = 20, metric: str = "minkowski", size_guard: str = "shrink") -> None:
        super().__init__(size_guard)
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.model: LocalOutlierFactor | None = None

    def fit(self, x) -> "LOFInlier":
        x = _matrix(x, "training embeddings")
        if len(x) < 2:
            raise ValueError(f"LOF needs at least 2 training embeddings, got {len(x)}")
        asked = {"n_neighbors": self.n_neighbors}
        fitting = neighbour_setting(len(x), self.n_neighbors, "n_neighbors")
        used = self.guard.resolve("LOFInlier", *x.shape, asked, *fitting, hint="set callbacks.inlier.model.n_neighbors")
        k = min(used["n_neighbors"], len(x) - 1)
        self.model = LocalOutlierFactor(n_neighbors=k, metric=self.metric, novelty=True).fit(x)
        return self

    def score(self, x) -> np.ndarray:
        return -self.model.score_samples(_matrix(x, "embeddings"))


class KNNInlier(_Sized):
    """Mean distance to the ``k`` nearest training embeddings (``euclidean`` or ``cosine``); at
    most half the fit set as neighbours (:func:`~.sizing.neighbour_setting`)."""

    METRICS = ("euclidean", "cosine")

    def __init__(self, k: int = 1, metric: str = "euclidean", chunk: int = 4096, size_guard: str = "shrink") -> None:
        super().__init__(size_guard)
        if metric not in self.METRICS:
            raise ValueError(f"k-NN metric must be {' or '.join(self.METRICS)}, got {metric!r}")
        self.k = k
        self.k_used = k
        self.metric = metric
        self.chunk = chunk
        self.bank: torch.Tensor | None = None

    def _prepare(self, x) -> torch.Tensor:
        x = x.detach().double() if isinstance(x, torch.Tensor) else torch.from_numpy(_matrix(x, "embeddings"))
        return torch.nn.functional.normalize(x, dim=1) if self.metric == "cosine" else x

    def fit(self, x) -> "KNNInlier":
        n, dim = _matrix(x, "training embeddings").shape
        asked = {"k": self.k}
        self.k_used = self.guard.resolve("KNNInlier", n, dim, asked, *neighbour_setting(n, self.k, "k"),
                                         hint="set callbacks.inlier.model.k")["k"]
        self.bank = self._prepare(x)
        return self

    def _distances(self, part: torch.Tensor) -> torch.Tensor:
        return 1.0 - part @ self.bank.T if self.metric == "cosine" else torch.cdist(part, self.bank)

    def score(self, x) -> np.ndarray:
        x = self._prepare(x).to(self.bank.device)
        k = min(self.k_used, len(self.bank))
        out = [self._distances(part).topk(k, dim=1, largest=False).values.mean(dim=1) for part in x.split(self.chunk)]
        return torch.cat(out).cpu().numpy()
