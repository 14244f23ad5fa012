"""Two-BCE outlier exposure (Kuroyanagi et al., EUSIPCO 2022, sec. III).

An encoder ``f`` maps log-mel crops to 128-d embeddings ``e``. Two binary cross-entropies
train it, with the other machine types of the dataset as pseudo-anomalies (``t = 0``) in 1:1
batches against the target machine (``t = 1``):

* machine type (eq. 2): ``g_affine`` on the squared norm (mean over dimensions,
  ``‖e‖² / D``, as the authors' code) → BCE against ``t``: other machines are pulled to the
  centre of the hypersphere;
* product / section ID (eq. 1): ``g_product`` (linear, no bias) → one BCE per section on
  the (mixed) section targets (per class of ``data.labels``: attribute classes instead of
  sections take the same path). Which samples count: by default, as the paper says under
  mixup ("each sample applies Eq. 1 if the target machine type is included"), every sample
  whose mixed ``t`` is above zero, with weight 1, normalised by ``K`` times their number
  (``product_weighting: target_present``); ``product_weighting: t`` weights each sample by its
  mixed ``t`` instead (a mix that is mostly another machine's audio barely counts). Without
  mixup both are eq. 1 as written. ``outlier_product_targets: zeros`` (the authors' code)
  counts every sample with weight 1, the other machines against all-zero targets.

``L = machine_weight · L_machine + λ · L_product``. Mixup (per-sample ``λ ~ Beta(α, α)``,
partner from the same batch) mixes waveforms or features and ``t`` and the section targets
alike, with a probability that moves linearly from ``mixup_prob`` to ``mixup_prob_end`` over
training. The validation loss (which picks the checkpoint) is the same loss over the whole
held-out set, with the machine term balanced 1:1 between the target and the other machines
as the training batches are. Scoring is by an inlier model on ``embed`` (``callbacks=inlier``); ``clip_scores``
is the paper's ablation without it: one minus the mean product-ID probability of the clip's
section (with attribute classes: of the most probable class of its section).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asd_lightning.models.base import ASDMethod
from asd_lightning.models.components.mixup import beta_lambdas, mix

OUTLIER_TARGETS = ("ignore", "zeros")
PRODUCT_WEIGHTINGS = ("target_present", "t")
MIXUP_ON = ("wave", "features")
INLIER_INPUTS = ("embedding", "authors")


def machine_loss(machine_logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean BCE of the machine-type logits against (possibly mixed) ``t``."""
    return F.binary_cross_entropy_with_logits(machine_logits, t)


def product_loss(product_logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``Σ_i w_i Σ_k BCE(logit_ik, y_ik) / (K Σ_i w_i)``; zero when no weight."""
    per_sample = F.binary_cross_entropy_with_logits(product_logits, targets, reduction="none").sum(dim=1)
    return (weights * per_sample).sum() / (product_logits.shape[1] * weights.sum().clamp_min(1e-12))


class TwoBCEOutlierExposure(ASDMethod):
    """EfficientNet-B0 embedding trained with the two-BCE outlier-exposure loss.

    Args:
        encoder: the embedding network (``EfficientNetEmbedding``), ``[N, 1, M, T] → [N, D]``.
        num_classes: product/section IDs (or the attribute classes of ``data.labels``) of the
            target machine(s); None = from the datamodule.
        product_weight: λ of eq. 3. machine_weight: weight of eq. 2 (0 = the paper's
            "only product IDs classification" ablation).
        outlier_product_targets: ``ignore`` (eq. 1: product loss on target samples only) or
            ``zeros`` (every sample, all-zero targets for the other machines).
        product_weighting: with ``ignore``, which samples eq. 1 counts under mixup:
            ``target_present`` (weight 1 where the mixed ``t > 0``: the paper) or ``t``.
        mixup_alpha, mixup_prob, mixup_prob_end, mixup_on: mixup settings (``mixup_prob: 0``
            turns it off).
        inlier_input: what :meth:`embed` gives the inlier model: ``embedding`` (``e``, the
            paper's ``h(f(x))``) or ``authors`` (the authors' code's default input: the machine
            logit, ``‖e‖ / D``, the ``K`` product logits and ``e``; 136 dimensions with DCASE
            2021's six sections).
    """

    class_head = "g_product"

    def __init__(self, encoder: nn.Module, optimizer=None, scheduler=None, num_classes: int | None = None,
                 product_weight: float = 10.0, machine_weight: float = 1.0, outlier_product_targets: str = "ignore",
                 product_weighting: str = "target_present", mixup_alpha: float = 0.2, mixup_prob: float = 1.0, mixup_prob_end: float | None = None,
                 mixup_on: str = "wave", inlier_input: str = "embedding") -> None:
        super().__init__(optimizer, scheduler)
        if outlier_product_targets not in OUTLIER_TARGETS:
            raise ValueError(f"outlier_product_targets must be one of {OUTLIER_TARGETS}, got {outlier_product_targets!r}")
        if product_weighting not in PRODUCT_WEIGHTINGS:
            raise ValueError(f"product_weighting must be one of {PRODUCT_WEIGHTINGS}, got {product_weighting!r}")
        if mixup_on not in MIXUP_ON:
            raise ValueError(f"mixup_on must be one of {MIXUP_ON}, got {mixup_on!r}")
        if inlier_input not in INLIER_INPUTS:
            raise ValueError(f"inlier_input must be one of {INLIER_INPUTS}, got {inlier_input!r}")
        for name, p in (("mixup_prob", mixup_prob), ("mixup_prob_end", mixup_prob_end)):
            if p is not None and not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"], logger=False)
        self.encoder = encoder
        self.g_affine = nn.Linear(1, 1)
        with torch.no_grad():  # start with "larger norm = target machine" (the paper's geometry)
            self.g_affine.weight.abs_()
        self.init_class_head(num_classes)

    def build_class_head(self, num_classes: int) -> nn.Linear:
        return nn.Linear(self.encoder.embedding_dim, num_classes, bias=False)

    # -- the method ----------------------------------------------------------------
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The inlier model's input (``inlier_input``)."""
        embedding = self.encoder(features)
        if self.hparams.inlier_input == "embedding":
            return embedding
        machine_logits, product_logits = self.heads(embedding)
        norm = embedding.float().norm(dim=1, keepdim=True) / embedding.shape[1]
        return torch.cat([machine_logits[:, None], norm, product_logits, embedding.float()], dim=1)

    def heads(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Machine-type logits ``[N]`` (affine map of ``‖e‖² / D``) and product logits ``[N, K]``."""
        with torch.autocast(embedding.device.type, enabled=False):  # a squared norm overflows fp16
            norm = embedding.float().pow(2).mean(dim=1, keepdim=True)
            return self.g_affine(norm)[:, 0], self.g_product(embedding.float())

    def targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``t`` (1 = target machine) and the one-hot class targets (zeros for other machines)."""
        t = batch["is_target"].float()
        label = batch["class"].long()
        onehot = F.one_hot(label.clamp(min=0), self.g_product.out_features).float()
        return t, onehot * (label >= 0).float()[:, None]

    def product_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weights of eq. 1 (see the module docstring)."""
        if self.hparams.outlier_product_targets == "zeros":
            return torch.ones_like(t)
        return t if self.hparams.product_weighting == "t" else (t > 0).to(t.dtype)

    def total(self, l_machine: torch.Tensor, l_product: torch.Tensor) -> torch.Tensor:
        """Eq. 3 (with the machine term's weight)."""
        return self.hparams.machine_weight * l_machine + self.hparams.product_weight * l_product

    def loss(self, features: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        machine_logits, product_logits = self.heads(self.encoder(features))
        l_machine = machine_loss(machine_logits, t)
        l_product = product_loss(product_logits, y, self.product_weights(t))
        return {"loss": self.total(l_machine, l_product), "machine": l_machine, "product": l_product}

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
        lam = beta_lambdas(n, self.hparams.mixup_alpha, features.device)
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

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(6, dtype=torch.float64, device=self.device)

    def validation_sums(self, batch: dict) -> torch.Tensor:
        """Machine BCE sum and count of target clips, the same of other clips, the weighted
        product BCE sum and its normaliser (K · Σ weights): summed over the epoch, then
        :meth:`loss_from_sums`."""
        t, y = self.targets(batch)
        machine_logits, product_logits = self.heads(self.encoder(batch["features"]))
        bce = F.binary_cross_entropy_with_logits(machine_logits, t, reduction="none")
        weights = self.product_weights(t)
        product = F.binary_cross_entropy_with_logits(product_logits, y, reduction="none").sum(dim=1)
        is_target = t > 0.5
        return torch.stack([bce[is_target].sum(), is_target.sum(), bce[~is_target].sum(), (~is_target).sum(),
                            (weights * product).sum(), weights.sum() * product_logits.shape[1]]).double()

    def loss_from_sums(self, sums: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss over a whole held-out set; the machine term weighs target and other clips
        alike, as the 1:1 training batches do."""
        l_machine = torch.stack([sums[i] / sums[i + 1] for i in (0, 2) if sums[i + 1] > 0]).mean()
        l_product = sums[4] / sums[5].clamp_min(1e-12)
        return {"loss": self.total(l_machine, l_product), "machine": l_machine, "product": l_product}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val_sums += self.validation_sums(batch)

    def on_validation_epoch_end(self) -> None:
        sums = self._val_sums
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if sums[1] + sums[3] > 0:
            self.log_dict({f"val/{k}": v.float() for k, v in self.loss_from_sums(sums).items()})

    def clip_scores(self, batch: dict) -> torch.Tensor:
        """Without an inlier model (ablation): 1 − mean over segments of the clip's section
        probability (the largest of its section's classes)."""
        own = self.classes_of_sections(batch["section"].long())
        features = batch["features"] if batch["features"].dim() == 5 else batch["features"][:, None]
        b, s = features.shape[:2]
        _, logits = self.heads(self.encoder(features.flatten(0, 1)).float())
        p = logits.sigmoid().masked_fill(~own.repeat_interleave(s, dim=0), 0.0).max(dim=1).values.view(b, s)
        return 1.0 - p.mean(dim=1)
