"""DG-Mix (Nejjar et al., DCASE 2022): self-supervised pre-training, the VICReg comparison, and
section-ID fine-tuning (sections 3.3-3.5).

* :class:`DGMixPretrain`: three weight-sharing branches on windows ``X``, ``X′`` (two
  different windows of the same machine type: the first and second half of a batch from the
  ``same_machine_pairs`` sampler) and ``X_λ = λX + (1 − λ)X′``, ``λ ~ Beta(0.5, 0.5)``, mixed on
  the device after the log-mel; encoder then expander; loss eq. 5
  ``γ·s(Z_λ, Z, Z′, λ) + μ(v(Z) + v(Z′)) + ν(c(Z) + c(Z′))`` with 25, 25, 1.
* :class:`VICRegPretrain`: two SpecAugment views of the same windows, VICReg's invariance in
  place of the consistency term.
* :class:`SectionIDFinetune`: the encoder (fresh, or loaded from either pre-training
  checkpoint) plus a 320-128-K classifier of the section classes (or of the attribute classes,
  ``data.labels``), mixup of windows with partners of the same section (either domain), KL
  divergence to the mixed class labels plus ``γ`` times the consistency term on the encoder
  embeddings. Scored by 1-NN on clip-mean embeddings (inlier callback).

Each branch runs through the networks as its own batch, so batch norm normalises X, X′ and
X_λ (VICReg's two views; fine-tuning's clean and mixed windows) each by its own statistics, as
VICReg's official code runs each view separately. ``joint_branches=True`` runs them as one
concatenated batch instead (one kernel launch per layer; the statistics are then pooled over
the branches, so a branch's output depends on the others' content).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asd_lightning.models.base import ASDMethod
from asd_lightning.models.components.dg_mix_encoder import DGMixEncoder
from asd_lightning.models.components.mixup import beta_lambdas, blend, mix, partners_in_group
from asd_lightning.models.components.spec_augment import SpecAugment
from asd_lightning.models.components.vicreg_terms import consistency, covariance, invariance, variance
from asd_lightning.optim.lars import exclude_bias_and_norm


def run_branches(network, views: tuple[torch.Tensor, ...], joint: bool = False) -> list[torch.Tensor]:
    """Each of ``views`` through ``network``: one forward pass per view (per-branch batch-norm
    statistics), or with ``joint`` one pass over their concatenation (pooled statistics)."""
    if joint:
        return list(network(torch.cat(views)).chunk(len(views)))
    return [network(view) for view in views]


def expander(in_dim: int = 320, width: int = 1280, layers: int = 3, norm_last: bool = False) -> nn.Sequential:
    """Fully connected layers of ``width`` with BatchNorm + ReLU; the last one plain unless
    ``norm_last`` (VICReg's code ends with a plain Linear; the DG-Mix text puts BN + ReLU
    after every layer)."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks.append(nn.Linear(in_dim if i == 0 else width, width))
        if i < layers - 1 or norm_last:
            blocks += [nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*blocks)


class _Pretrain(ASDMethod):
    """Encoder + expander trained by a self-supervised loss on window pairs; LARS groups."""

    def __init__(self, encoder: nn.Module | None, optimizer, scheduler, expander_width: int, expander_layers: int,
                 expander_norm_last: bool) -> None:
        super().__init__(optimizer, scheduler)
        self.encoder = encoder if encoder is not None else DGMixEncoder()
        self.expander = expander(self.encoder.embedding_dim, expander_width, expander_layers, expander_norm_last)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features)

    def optimizer_params(self) -> list:
        return exclude_bias_and_norm(self)

    def project(self, *views: torch.Tensor) -> list[torch.Tensor]:
        """Each view through encoder and expander (:func:`run_branches`, ``joint_branches``)."""
        z = run_branches(lambda v: self.expander(self.encoder(v)), views, self.hparams.get("joint_branches", False))
        return [branch.float() for branch in z]

    def regularisers(self, z: torch.Tensor, z_other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return variance(z) + variance(z_other), covariance(z) + covariance(z_other)

    def losses(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch["features"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True,
                      batch_size=len(batch["features"]))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        features = batch["features"][: len(batch["features"]) // 2 * 2]  # pairs need an even batch
        if len(features) >= 4:  # batch statistics need a few windows
            self.log("val/loss", self.losses(features)["loss"], batch_size=len(features), sync_dist=True)


class DGMixPretrain(_Pretrain):
    """DG-Mix self-supervised pre-training (eq. 5).

    Args:
        encoder: the encoder (default the Table 1 ``DGMixEncoder``).
        consistency_weight, variance_weight, covariance_weight: γ, μ, ν (25, 25, 1).
        mixup_alpha: ``α = β`` of the Beta distribution of ``λ`` (0.5).
        consistency_reduction: ``mean`` over batch and dimensions (default: the scale of
            VICReg's invariance term, for which the paper took γ = 25 unchanged) or ``sum``
            over dimensions as eq. 1 is written (1280 times larger).
        joint_branches: run X, X′ and X_λ as one batch (pooled batch-norm statistics; faster)
            instead of one pass each.
    """

    def __init__(self, encoder: nn.Module | None = None, optimizer=None, scheduler=None,
                 consistency_weight: float = 25.0, variance_weight: float = 25.0, covariance_weight: float = 1.0,
                 mixup_alpha: float = 0.5, expander_width: int = 1280, expander_layers: int = 3,
                 expander_norm_last: bool = False, consistency_reduction: str = "mean",
                 joint_branches: bool = False) -> None:
        super().__init__(encoder, optimizer, scheduler, expander_width, expander_layers, expander_norm_last)
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"], logger=False)

    def losses(self, features: torch.Tensor, lam: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 5 on a pair batch: ``X`` and ``X′`` are its first and second half."""
        if len(features) < 4 or len(features) % 2:
            raise ValueError(f"DG-Mix pre-training needs an even batch of at least 4 windows, got {len(features)}")
        x, x_other = features.chunk(2)
        if lam is None:
            lam = beta_lambdas(len(x), self.hparams.mixup_alpha, x.device)
        z, z_other, z_mixed = self.project(x, x_other, blend(x, x_other, lam))
        s = consistency(z_mixed, z, z_other, lam, self.hparams.consistency_reduction)
        v, c = self.regularisers(z, z_other)
        h = self.hparams
        loss = h.consistency_weight * s + h.variance_weight * v + h.covariance_weight * c
        return {"loss": loss, "consistency": s, "variance": v, "covariance": c}


class VICRegPretrain(_Pretrain):
    """VICReg with SpecAugment views (the DG-Mix paper's Table 3 comparison): two augmented
    views of the same windows; invariance (MSE), variance and covariance, weights 25, 25, 1.

    Like for like with :class:`DGMixPretrain`: with ``pair_batches`` (default) it reads the
    same pair batches from the same sampler and takes their first halves, the windows DG-Mix
    calls ``X``, so both methods see the same ``N`` windows per branch, the same number of
    steps and the same schedule; ``pair_batches=False`` uses every window of the batch.
    ``joint_branches``: both views as one batch (pooled batch-norm statistics).
    """

    def __init__(self, encoder: nn.Module | None = None, optimizer=None, scheduler=None,
                 invariance_weight: float = 25.0, variance_weight: float = 25.0, covariance_weight: float = 1.0,
                 augment: nn.Module | None = None, expander_width: int = 1280, expander_layers: int = 3,
                 expander_norm_last: bool = False, pair_batches: bool = True, joint_branches: bool = False) -> None:
        super().__init__(encoder, optimizer, scheduler, expander_width, expander_layers, expander_norm_last)
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler", "augment"], logger=False)
        self.augment = augment if augment is not None else SpecAugment()

    def losses(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.hparams.pair_batches:
            features = features[: len(features) // 2]
        if len(features) < 2:
            raise ValueError("VICReg needs at least 2 windows per batch")
        z, z_other = self.project(self.augment(features), self.augment(features))
        inv = invariance(z, z_other)
        v, c = self.regularisers(z, z_other)
        h = self.hparams
        loss = h.invariance_weight * inv + h.variance_weight * v + h.covariance_weight * c
        return {"loss": loss, "invariance": inv, "variance": v, "covariance": c}


def load_encoder(encoder: nn.Module, checkpoint: str | Path) -> nn.Module:
    """Copy the ``encoder.*`` weights of a pre-training (or fine-tuning) checkpoint into ``encoder``."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {path} does not exist (model.encoder_ckpt)")
    state = torch.load(path, map_location="cpu", weights_only=False).get("state_dict", {})
    weights = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not weights:
        raise ValueError(f"{path} holds no encoder.* weights: not a DGMixPretrain / VICRegPretrain checkpoint")
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"{path}: its encoder does not fit this one ({error})") from error
    return encoder


class SectionIDFinetune(ASDMethod):
    """Section-ID fine-tuning with mixup, KL to mixed labels and the consistency term.

    Args:
        encoder: the encoder (default ``DGMixEncoder``); ``encoder_ckpt``: a pre-training
            checkpoint whose encoder weights training starts from.
        num_classes: classes (sections, or the datamodule's ``data.labels``); None = from the datamodule.
        hidden: classifier hidden width (320-128-K).
        consistency_weight: weight of eq. 1 on the encoder embeddings; consistency_reduction:
            ``mean`` (squared error averaged over the 320 dimensions) or ``sum`` (eq. 1 as written).
        mixup_alpha: Beta parameter of ``λ``; ``mixup_partner``: ``section`` (a window of the
            same section, either domain) or ``any`` (any window of the batch).
        joint_branches: the clean and the mixed windows through the encoder as one batch
            (pooled batch-norm statistics) instead of one pass each.
    """

    class_head = "classifier"

    def __init__(self, encoder: nn.Module | None = None, optimizer=None, scheduler=None,
                 num_classes: int | None = None, encoder_ckpt: str | None = None, hidden: int = 128,
                 consistency_weight: float = 1.0, mixup_alpha: float = 0.5, mixup_partner: str = "section",
                 consistency_reduction: str = "mean", joint_branches: bool = False) -> None:
        super().__init__(optimizer, scheduler)
        if mixup_partner not in ("section", "any"):
            raise ValueError(f"mixup_partner must be 'section' or 'any', got {mixup_partner!r}")
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"], logger=False)
        self.encoder = encoder if encoder is not None else DGMixEncoder()
        self.init_class_head(num_classes)

    def build_class_head(self, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(self.encoder.embedding_dim, self.hparams.hidden), nn.ReLU(inplace=True),
                             nn.Linear(self.hparams.hidden, num_classes))

    def setup(self, stage: str) -> None:
        """Before training, start from the pre-trained encoder (a resumed run's checkpoint is
        restored after this; testing a fine-tuned checkpoint never needs the file)."""
        if stage == "fit" and self.hparams.encoder_ckpt:
            load_encoder(self.encoder, self.hparams.encoder_ckpt)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features)

    def losses(self, features: torch.Tensor, section: torch.Tensor, lam: torch.Tensor | None = None,
               partner: torch.Tensor | None = None, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """KL and consistency of a batch: windows ``features``, their ``section`` (mixup
        partners) and ``classes`` (the labels; default the sections)."""
        n = len(features)
        classes = section if classes is None else classes
        if partner is None:
            partner = partners_in_group(section) if self.hparams.mixup_partner == "section" \
                else torch.randperm(n, device=features.device)
        if lam is None:
            lam = beta_lambdas(n, self.hparams.mixup_alpha, features.device)
        y = F.one_hot(classes.long(), self.classifier[-1].out_features).float()
        e, e_mixed = (branch.float() for branch in run_branches(
            self.encoder, (features, mix(features, partner, lam)), self.hparams.joint_branches))
        log_p = F.log_softmax(self.classifier(e_mixed).float(), dim=1)
        kl = F.kl_div(log_p, mix(y, partner, lam), reduction="batchmean")
        s = consistency(e_mixed, e, e[partner], lam, self.hparams.consistency_reduction)
        return {"loss": kl + self.hparams.consistency_weight * s, "kl": kl, "consistency": s}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch["features"], batch["section"], classes=batch["class"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True,
                      batch_size=len(batch["features"]))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.classifier(self.encoder(batch["features"])).float()
        self.log("val/loss", F.cross_entropy(logits, batch["class"].long()), batch_size=len(logits), sync_dist=True)
