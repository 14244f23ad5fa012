"""Shared LightningModule plumbing: a method defines its networks, its loss and ``embed``.

Everything else is here: optimiser and LR schedule construction from Hydra partials (the
schedule sized from ``trainer.estimated_stepping_batches``), and the test step that turns
whole-clip batches into clip scores (methods that score directly, e.g. the autoencoder) or
clip embeddings (methods scored by an inlier model).

Several microphones (``data.channels=both``): a method's ``channel_mode`` says how it uses
them. ``per_channel`` (every method unless it says otherwise): each channel is its own input
to the same networks; training crops come unfolded (one item per channel), a clip's embedding
is the channels' embeddings concatenated (``[B, S, C * D]``, what the inlier model scores) and
a directly scored clip gets the mean of its channels' scores. ``paired``: the method's
``training_step`` gets both channels together (``[B, C, n_mels, frames]``) and its ``embed``
takes ``[N, C, n_mels, frames]``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import lightning as L
import torch


class ASDMethod(L.LightningModule):
    """Base class of every method.

    Args:
        optimizer: partial of a ``torch.optim`` optimiser (``params`` are filled in); may be
            None for a model loaded only to score (``load_from_checkpoint``).
        scheduler: optional partial of a ``torch.optim.lr_scheduler`` class; ``total_steps``
            (OneCycleLR), ``T_max`` (CosineAnnealingLR) or ``total_iters`` (LinearLR,
            PolynomialLR) are filled in from ``trainer.estimated_stepping_batches`` when the
            class takes them; the schedule steps every optimiser step.
    """

    def __init__(self, optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.score_by_embeddings = False  # set by InlierModelCallback while it tests

    # -- to implement -------------------------------------------------------------
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Model inputs ``[N, 1, n_mels, frames]`` → embeddings ``[N, D]``."""
        raise NotImplementedError(f"{type(self).__name__} does not define embed()")

    def clip_scores(self, batch: dict) -> torch.Tensor | None:
        """Anomaly score per clip of a whole-clip batch, or None when an inlier model scores."""
        return None

    def build_class_head(self, num_classes: int) -> torch.nn.Module:
        """The layers whose size is the number of classes, for classifiers (they name the
        attribute in ``class_head``; see :meth:`init_class_head`)."""
        raise NotImplementedError(f"{type(self).__name__} does not classify")

    # -- shared ------------------------------------------------------------------
    class_head: str | None = None  # attribute holding build_class_head's module, if any
    channel_mode: str = "per_channel"  # how several channels are used (module docstring)
    training_free: bool = False  # nothing to fit (e.g. the log-mel statistics floor): asd-train only tests

    def init_class_head(self, num_classes: int | None) -> None:
        """In ``__init__``: build the class head now when ``num_classes`` is known, else in
        :meth:`configure_model` once the datamodule tells the count."""
        if num_classes is None:
            setattr(self, self.class_head, None)
        else:
            self._build_classes(num_classes)

    def configure_model(self) -> None:
        if self.class_head is not None and getattr(self, self.class_head, None) is None:
            self._build_classes(self.class_count())

    def _build_classes(self, num_classes: int) -> None:
        setattr(self, self.class_head, self.build_class_head(num_classes))
        # the section class of each class; the datamodule's in class_count(), a checkpoint's on loading
        sections = getattr(self, "_data_class_sections", None)
        self.register_buffer("class_sections", torch.tensor(sections if sections is not None else list(range(num_classes)),
                                                             dtype=torch.long))

    def class_count(self) -> int:
        """``hparams.num_classes``, else the number of classes of the datamodule's label set
        (``label_classes``, see ``data.labels``; then stored in the hyperparameters, so a
        checkpoint loads without the data)."""
        if self.hparams.get("num_classes") is None:
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            if datamodule is None or not getattr(datamodule, "label_classes", None):
                raise ValueError(f"{type(self).__name__} needs num_classes, or a datamodule with label_classes")
            self.hparams.num_classes = len(datamodule.label_classes)
            self._data_class_sections = list(datamodule.class_sections)
        return int(self.hparams.num_classes)

    def classes_of_sections(self, section: torch.Tensor) -> torch.Tensor:
        """``[B, K]``: True where class ``k`` lies in the section class ``section[b]`` (with
        ``data.labels=section`` the class is the section itself)."""
        if (section < 0).any():
            raise ValueError("clips of sections the model was not trained on cannot be scored by its classes; "
                             "use an inlier model (callbacks=inlier)")
        return self.class_sections.to(section.device)[None, :] == section[:, None]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("num_classes")
        mine = self.hparams.get("num_classes")
        if saved is not None and mine is not None and saved != mine:
            raise ValueError(f"the checkpoint classifies {saved} classes but the data has {mine}: use the machine "
                             "types, sections and data.labels it was trained on")

    def segment_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Segmented clips ``[B, S, C, M, T]`` (or whole ``[B, C, M, T]``) → ``[B, S, D]`` float32;
        with ``per_channel`` and C > 1 each channel is embedded alone, then concatenated."""
        if features.dim() == 4:
            features = features[:, None]
        b, s, c = features.shape[:3]
        if c > 1 and self.channel_mode == "per_channel":
            features = features.reshape(b * s * c, 1, *features.shape[3:])
        return self.embed(features.flatten(0, 1) if features.dim() == 5 else features).float().view(b, s, -1)

    def channel_clip_scores(self, batch: dict) -> torch.Tensor | None:
        """:meth:`clip_scores` of a batch; a ``per_channel`` method's scores of several channels
        are the mean of each channel scored alone."""
        features = batch["features"]
        c = features.shape[-3]
        if c == 1 or self.channel_mode != "per_channel":
            return self.clip_scores(batch)
        b = features.shape[0]
        per_channel = dict(batch)
        # [B, (S,) C, M, T] -> [B * C, (S,) 1, M, T]; wave [B, C, samples] -> [B * C, samples]
        per_channel["features"] = features.movedim(-3, 1).reshape(b * c, *features.shape[1:-3], 1,
                                                                   *features.shape[-2:])
        per_channel["wave"] = batch["wave"].flatten(0, 1)
        for name in ("machine", "section", "class", "domain", "label", "clip_id", "is_target"):
            if name in batch:
                per_channel[name] = batch[name].repeat_interleave(c)
        scores = self.clip_scores(per_channel)
        return None if scores is None else scores.view(b, c).mean(dim=1)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """``clip_id`` plus the clip ``score`` of methods that score directly, else (or when an
        inlier model scores, ``score_by_embeddings``) the ``segment_embeddings`` ``[B, S, D]``."""
        out = {"clip_id": batch["clip_id"]}
        scores = None if self.score_by_embeddings else self.channel_clip_scores(batch)
        if scores is not None:
            out["score"] = scores.float()
        else:
            out["segment_embeddings"] = self.segment_embeddings(batch["features"])
        return out

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self.test_step(batch, batch_idx)

    def optimizer_params(self) -> list:
        """What the optimiser gets: the trainable parameters, or parameter groups when a submodule
        sets its own rates (``parameter_groups(lr)``: a pre-trained encoder's layer-wise rates)."""
        grouped = [m for m in self.children() if callable(getattr(m, "parameter_groups", None))]
        if not grouped:
            return [p for p in self.parameters() if p.requires_grad]
        lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if lr is None:
            raise ValueError("layer-wise learning rates need model.optimizer.lr")
        groups = [g for m in grouped for g in m.parameter_groups(lr)]
        seen = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        return [g for g in groups if g["params"]] + ([{"params": rest}] if rest else [])

    def _rebuild_train_loader_after_restore(self) -> None:
        """Sizing the schedule (``estimated_stepping_batches``) makes Lightning build the training
        loader, and draw its first epoch's batches, before a resumed fit restores the
        checkpoint's epoch; the resumed epoch would then train on epoch 0's batches and crops.
        Drop that loader: the fit loop builds it again after the restore, at the right epoch
        (Lightning 2.6's fit loop; ``tests/test_resume_mixup.py`` checks it)."""
        fit_loop = self.trainer.fit_loop
        if fit_loop._data_fetcher is not None:
            fit_loop._data_fetcher.teardown()  # stops the loader's worker processes
            fit_loop._data_fetcher = None
        fit_loop._combined_loader = None

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} has no optimizer: pass model.optimizer to train it")
        optimizer = self.optimizer_factory(params=self.optimizer_params())
        if self.scheduler_factory is None:
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        if self.trainer.ckpt_path is not None:
            self._rebuild_train_loader_after_restore()
        target = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        accepted = inspect.signature(target).parameters
        sizing = {name: steps for name in ("total_steps", "T_max", "total_iters") if name in accepted}
        scheduler = self.scheduler_factory(optimizer=optimizer, **sizing)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
