"""Memory mixup (GenRep): the target memory enlarged by mixes with the nearest source clips."""

from __future__ import annotations

import numpy as np

import pytest

from asd_lightning.callbacks.inlier_model import InlierModelCallback
from asd_lightning.scoring import KNNInlier
from asd_lightning.scoring.memory_mixup import memory_mixup
from asd_lightning.scoring.section_fit import SectionFitter


def test_memory_mixup_by_hand() -> None:
    target = np.array([[1.0, 0.0]])
    source = np.array([[0.0, 1.0], [1.0, 0.1], [0.9, -0.1]])
    out = memory_mixup(target, source, neighbours=2, lam=0.5)
    # the target row, then its mixes with the two nearest source rows by cosine: [1, .1] and [.9, -.1]
    assert np.allclose(out, [[1.0, 0.0], [1.0, 0.05], [0.95, -0.05]])
    assert memory_mixup(target, source[:0], neighbours=3).shape == (1, 2)


def test_the_target_model_of_a_section_holds_the_mixed_memory() -> None:
    """Per-domain cosine 1-NN: the target model's memory is its 3 clips and their mixes with
    their 2 nearest source clips (9 rows); the source model keeps its 6 clips; a target-like
    clip between the two domains scores nearer with the mixed memory."""
    rng = np.random.default_rng(0)
    source = {i: (np.array([1.0, 0.0, 0.0]) + 0.05 * rng.standard_normal(3))[None] for i in range(6)}
    target = {i: (np.array([0.0, 1.0, 0.0]) + 0.05 * rng.standard_normal(3))[None] for i in range(6, 9)}
    fit = {**source, **target}
    domain_of = {i: "source" if i < 6 else "target" for i in fit}
    settings = dict(model_factory=lambda: KNNInlier(k=1, metric="cosine"), per_domain=True, model_zscore=False)
    mixed = SectionFitter(**settings, memory_mixup={"neighbours": 2, "lam": 0.5})
    scorer, _ = mixed.fit(fit, list(fit), list(fit), domain_of)
    assert [len(m.bank) for m in scorer.models] == [6, 9] and scorer.domains == ["source", "target"]
    plain, _ = SectionFitter(**settings).fit(fit, list(fit), list(fit), domain_of)
    between = [np.array([[0.5, 0.6, 0.0]])]
    assert scorer.per_model(between)[1][0] < plain.per_model(between)[1][0]


def test_memory_mixup_needs_a_target_and_a_source_memory() -> None:
    with pytest.raises(ValueError, match="needs per_domain=true and both fit_domains"):
        InlierModelCallback(per_domain=False, memory_mixup={"neighbours": 1, "lam": 0.5})
    with pytest.raises(ValueError, match="needs per_domain=true"):
        InlierModelCallback(per_domain=True, fit_domains=["target"], memory_mixup={"neighbours": 1, "lam": 0.5})
    assert InlierModelCallback(per_domain=True, memory_mixup={"neighbours": 1, "lam": 0.5}).fitter.memory_mixup
