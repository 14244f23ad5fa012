"""Two-BCE outlier exposure (Kuroyanagi et al., EUSIPCO 2022, sec. III).

An encoder ``f`` maps log-mel crops to 128-d embeddings ``e``. Two binary cross-entropies
train it, with the other machine types of the dataset as pseudo-anomalies (``t = 0``) in 1:1
batches against the target machine (``t = 1``):

* machine type (eq. 2): ``g_affine`` on the squared norm (mean over dimensions,
  ``‖e‖² / D``, as the authors' code) → BCE against ``t``: other machines are pulled to the
  centre of the hypersphere;
* product / section ID (eq. 1): ``g_product`` (linear, no bias) → one BCE per section, on
  target samples only, weighted by ``t``; or, with ``outlier_product_targets: zeros`` (the
  authors' code), on every sample with all-zero targets for the other machines.

``L = machine_weight · L_machine + λ · L_product``. Mixup (per-sample ``λ ~ Beta(α, α)``,
partner from the same batch) mixes waveforms or features and ``t`` and the section targets
alike, with a probability that moves linearly from ``mixup_prob`` to ``mixup_prob_end`` over
training. Scoring is by an inlier model on ``embed`` (``callbacks=inlier``); ``clip_scores``
is the paper's ablation without it: one minus the mean product-ID probability of the clip's
section.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asd_lightning.models.base import ASDMethod

OUTLIER_TARGETS = ("ignore", "zeros")
MIXUP_ON = ("wave", "features")


def machine_loss(machine_logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean BCE of the machine-type logits against (possibly mixed) ``t``."""
    return F.binary_cross_entropy_with_logits(machine_logits, t)


def product_loss(product_logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``Σ_i w_i Σ_k BCE(logit_ik, y_ik) / (K Σ_i w_i)``; zero when no weight."""
    per_sample = F.binary_cross_entropy_with_logits(product_logits, targets, reduction="none").sum(dim=1)
    total = weights.sum()
    if total <= 0:
        return product_logits.sum() * 0.0
    return (weights * per_sample).sum() / (product_logits.shape[1] * total)


def mix(x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``λ x + (1 − λ) x[partner]`` with one ``λ`` per sample (first dimension)."""
    lam = lam.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return lam * x + (1 - lam) * x[partner]


class TwoBCEOutlierExposure(ASDMethod):
    """EfficientNet-B0 embedding trained with the two-BCE outlier-exposure loss.

    Args:
        encoder: the embedding network (``EfficientNetEmbedding``), ``[N, 1, M, T] → [N, D]``.
        num_sections: product/section IDs of the target machine(s); None = from the datamodule.
        product_weight: λ of eq. 3. machine_weight: weight of eq. 2 (0 = the paper's
            "only product IDs classification" ablation).
        outlier_product_targets: ``ignore`` (eq. 1: product loss on target samples only) or
            ``zeros`` (every sample, all-zero targets for the other machines).
        mixup_alpha, mixup_prob, mixup_prob_end, mixup_on: mixup settings (``mixup_prob: 0``
            turns it off).
    """

    def __init__(self, encoder: nn.Module, optimizer=None, scheduler=None, num_sections: int | None = None,
                 product_weight: float = 10.0, machine_weight: float = 1.0, outlier_product_targets: str = "ignore",
                 mixup_alpha: float = 0.2, mixup_prob: float = 1.0, mixup_prob_end: float | None = None,
                 mixup_on: str = "wave") -> None:
        super().__init__(optimizer, scheduler)
        if outlier_product_targets not in OUTLIER_TARGETS:
            raise ValueError(f"outlier_product_targets must be one of {OUTLIER_TARGETS}, got {outlier_product_targets!r}")
        if mixup_on not in MIXUP_ON:
            raise ValueError(f"mixup_on must be one of {MIXUP_ON}, got {mixup_on!r}")
        for name, p in (("mixup_prob", mixup_prob), ("mixup_prob_end", mixup_prob_end)):
            if p is not None and not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"], logger=False)
        self.encoder = encoder
        self.g_affine = nn.Linear(1, 1)
        self.g_product: nn.Linear | None = None
        if num_sections is not None:
            self._build(num_sections)

    def _build(self, num_sections: int) -> None:
        self.g_product = nn.Linear(self.encoder.embedding_dim, num_sections, bias=False)

    def configure_model(self) -> None:
        if self.g_product is None:
            self._build(self.section_count())

    # -- the method ----------------------------------------------------------------
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features)

    def heads(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Machine-type logits ``[N]`` (affine map of ``‖e‖² / D``) and product logits ``[N, K]``."""
        norm = embedding.float().pow(2).mean(dim=1, keepdim=True)
        return self.g_affine(norm)[:, 0], self.g_product(embedding)

    def targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``t`` (1 = target machine) and the one-hot section targets (zeros for other machines)."""
        t = batch["is_target"].float()
        section = batch["section"].long()
        onehot = F.one_hot(section.clamp(min=0), self.g_product.out_features).float()
        return t, onehot * (section >= 0).float()[:, None]

    def loss(self, features: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        machine_logits, product_logits = self.heads(self.embed(features))
        weights = t if self.hparams.outlier_product_targets == "ignore" else torch.ones_like(t)
        l_machine = machine_loss(machine_logits.float(), t)
        l_product = product_loss(product_logits.float(), y, weights)
        total = self.hparams.machine_weight * l_machine + self.hparams.product_weight * l_product
        return {"loss": total, "machine": l_machine, "product": l_product}

    def mixup_probability(self) -> float:
        """The scheduled mixup probability at the current optimiser step."""
        start, end = self.hparams.mixup_prob, self.hparams.mixup_prob_end
        if end is None or self._trainer is None:
            return float(start)
        progress = min(1.0, self.trainer.global_step / max(1, int(self.trainer.estimated_stepping_batches)))
        return float(start + (end - start) * progress)

    def mixed_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, ``t`` and section targets of a training batch, mixed up with probability
        :meth:`mixup_probability`."""
        t, y = self.targets(batch)
        features = batch["features"]
        if self.hparams.mixup_alpha <= 0 or torch.rand(()).item() >= self.mixup_probability():
            return features, t, y
        n = len(t)
        beta = torch.distributions.Beta(self.hparams.mixup_alpha, self.hparams.mixup_alpha)
        lam = beta.sample((n,)).to(features.device)
        partner = torch.randperm(n, device=features.device)
        if self.hparams.mixup_on == "wave":
            features = self.trainer.datamodule.featurize(mix(batch["wave"], partner, lam)).unsqueeze(1)
        else:
            features = mix(features, partner, lam)
        return features, mix(t, partner, lam), mix(y, partner, lam)

    # -- loops ---------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.loss(*self.mixed_batch(batch))
        n = len(batch["wave"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, on_step=False, on_epoch=True,
                      batch_size=n)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses = self.loss(batch["features"], *self.targets(batch))
        self.log("val/loss", losses["loss"], prog_bar=True, batch_size=len(batch["wave"]), sync_dist=True)

    def clip_scores(self, batch: dict) -> torch.Tensor:
        """Without an inlier model (ablation): 1 − mean over segments of the clip's section probability."""
        features = batch["features"]
        if features.dim() == 4:
            features = features[:, None]
        b, s = features.shape[:2]
        _, logits = self.heads(self.embed(features.flatten(0, 1)))
        section = batch["section"].long().clamp(min=0).repeat_interleave(s)
        p = logits.float().sigmoid().gather(1, section[:, None])[:, 0].view(b, s)
        return 1.0 - p.mean(dim=1)
