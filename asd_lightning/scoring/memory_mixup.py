"""Memory mixup (GenRep, Saengthong et al. 2024): a sparse target-domain memory enlarged by mixing
each target embedding with its nearest source embeddings.

For each target row ``t`` and each of its ``neighbours`` nearest source rows ``s`` (cosine),
the memory gains ``λ t + (1 − λ) s``; the target rows themselves stay. With DCASE's 10 target
against 990 source clips per section, the k-NN of the target domain then sees more than ten
points near the target clips.
"""

from __future__ import annotations

import numpy as np

from asd_lightning.utils.errors import UserError


def memory_mixup(target: np.ndarray, source: np.ndarray, neighbours: int = 1, lam: float = 0.5) -> np.ndarray:
    """``[T, D]`` target rows, ``[S, D]`` source rows → ``[T · (1 + k), D]``: the targets, then
    their mixes with their ``k = min(neighbours, S)`` nearest source rows (cosine similarity)."""
    if not 0.0 <= lam <= 1.0:
        raise UserError(f"memory mixup lam must be in [0, 1], got {lam}")
    k = min(int(neighbours), len(source))
    if k < 1 or not len(target):
        return target
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    nearest = np.argsort(-(unit(target) @ unit(source).T), axis=1, kind="stable")[:, :k]  # [T, k]
    mixed = lam * target[:, None, :] + (1.0 - lam) * source[nearest]
    return np.concatenate([target, mixed.reshape(-1, target.shape[1])])
