"""After testing: inlier models on embeddings → clip scores → the official table.

The method only has to define ``embed``. With the weights that are being tested (the best or
last checkpoint that ``trainer.test`` loaded), the callback

1. embeds every segment of the test clips (in the test loop) and of the chosen fit clips,
2. fits one inlier model per section (optionally one per domain, scoring with the minimum),
   on the fit clips' segment embeddings or their clip-mean embeddings (``embedding_mean``,
   as DG-Mix does), sized to the fit set (:mod:`asd_lightning.scoring.section_fit` and
   :mod:`~asd_lightning.scoring.sizing`; what was shrunk goes to the log, to
   ``inlier_models.csv`` beside the submission and to the ``test/inlier_small_fit_sets`` metric),
3. scores the test segments, optionally z-scores per section, aggregates per clip, and
4. hands the clip scores to :class:`OfficialScores` (decision thresholds from the fit clips'
   scores, cross-fitted by clip so that no clip scores against itself, submission CSVs, the official table, metrics to every logger), and
5. draws ROC curves, score histograms and a 2-D map of the test clips' embeddings
   (``plots/*.png`` beside the submission), logged as images to W&B and TensorBoard, and to
   W&B also as a table of embeddings for its projection panel.

The callback keeps no state between runs, so ``trainer.test(ckpt_path=...)`` cannot restore
a stale inlier model from a checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import matplotlib.image
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from asd_lightning.callbacks.official_scores import OfficialScores, clip_batches, gather_objects
from asd_lightning.metrics import plots
from asd_lightning.scoring import AGGREGATORS, InlierModel, KNNInlier
from asd_lightning.scoring.section_fit import SectionFitter
from asd_lightning.scoring.section_scorer import SectionScorer
from asd_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

FIT_SUBSETS = ("train", "val", "fit")


def clip_rows(embeddings: torch.Tensor, clip_mean: bool) -> np.ndarray:
    """``[B, S, D]`` segment embeddings as float32 numpy, reduced to ``[B, 1, D]`` clip means
    when only those are scored (less to gather across ranks)."""
    if clip_mean:
        embeddings = embeddings.mean(dim=1, keepdim=True)
    return embeddings.float().cpu().numpy()


def embed_clips(pl_module: L.LightningModule, datamodule, subset: str, clip_mean: bool = False) -> dict[int, np.ndarray]:
    """``clip_id`` → ``[S, D]`` segment embeddings (``[1, D]`` clip means with ``clip_mean``)
    of the target machines' clips of ``subset``, gathered from every rank."""
    out: dict[int, np.ndarray] = {}
    for batch in clip_batches(pl_module, datamodule, subset):
        emb = clip_rows(pl_module.segment_embeddings(batch["features"]), clip_mean)
        out.update(zip(batch["clip_id"].cpu().tolist(), emb))
    return dict(gather_objects(list(out.items())))


def write_figures(scored: pd.DataFrame, embeddings: np.ndarray, year: int, out_dir: Path,
                  projection: str = "pca") -> dict[str, Path]:
    """ROC curves, score histograms and the embedding map as PNGs in ``out_dir``."""
    figures = {
        "roc": plots.roc_curves(scored, year),
        "score_histograms": plots.score_histograms(scored),
        f"embeddings_{projection}": plots.embedding_map(plots.project(embeddings, projection), scored,
                                                        projection.upper()),
    }
    return {name: plots.save_figure(fig, out_dir / f"{name}.png") for name, fig in figures.items()}


def log_figures(trainer: L.Trainer, paths: dict[str, Path]) -> None:
    """PNG figures to W&B (images) and TensorBoard; other loggers keep the files only."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            for name, path in paths.items():
                logger.log_image(key=f"test/{name}", images=[str(path)])
        elif isinstance(logger, TensorBoardLogger):
            for name, path in paths.items():
                image = matplotlib.image.imread(path)[..., :3]
                logger.experiment.add_image(f"test/{name}", image, dataformats="HWC")


def log_embedding_table(trainer: L.Trainer, scored: pd.DataFrame, embeddings: np.ndarray) -> None:
    """Clip embeddings with their metadata as a W&B table (for its 2-D projection panel)."""
    columns = ["file", "machine", "section", "domain", "label", "score"]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            rows = [[*(r[c] for c in columns), *map(float, e)]
                    for r, e in zip(scored[columns].to_dict("records"), embeddings)]
            logger.log_table(key="test/embeddings", columns=columns + [f"e{j}" for j in range(embeddings.shape[1])],
                             data=rows)


def _run_config_yaml() -> str | None:
    """The Hydra config of this run as YAML, None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import OmegaConfBaseException

    try:
        hydra_cfg = HydraConfig.get()
        path = Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir) / "config.yaml"
    except (ValueError, OmegaConfBaseException):  # not inside a Hydra run
        return None
    return path.read_text(encoding="utf-8") if path.is_file() else None


class InlierModelCallback(OfficialScores):
    """Inlier model per section on the tested encoder's embeddings; then the official scores.

    Args:
        model: factory of a fresh inlier model (a Hydra partial of ``GMMInlier``,
            ``LOFInlier`` or ``KNNInlier``); default 1-NN Euclidean.
        fit_subset: clips the models are fitted on: ``val`` (held-out normals), ``train``
            or ``fit`` (both).
        fit_domains: domains of those clips to use (``[source]``, ``[target]`` or both).
        per_domain: one model per domain and section; a clip's score is the minimum.
        model_zscore: standardise each model's scores by the (cross-fitted) scores of the clips
            it was fitted on, before the minimum: with ``per_domain`` this puts the source and
            the target model on one scale, so a sparse target domain is not scored as anomalous
            just for being far from its few training clips.
        standardize: centre and scale every embedding dimension by the section's fit clips
            before the models see them (the training-free floor's statistics need it).
        aggregation: ``embedding_mean`` (score the clip-mean embedding) or how segment
            scores become a clip score: ``mean``, ``max``, ``median``, ``mean_above_median``,
            ``mean_below_median``.
        zscore: standardise scores per section by the fit clips' scores.
        threshold_folds: the fit clips' own scores (for the decision thresholds and the
            z-score) come from models fitted without them, in this many folds of whole clips.
        memory_mixup: ``{neighbours, lam}``: with ``per_domain``, the target model's memory also
            holds mixes of each target clip with its nearest source clips (GenRep); None = off.
        plots: write and log the figures; projection: ``pca`` or ``tsne`` for the map.
        bundle_dir: where to write one :class:`~asd_lightning.deploy.ModelBundle` per machine
            type (``<bundle_dir>/<machine>``), for ``asd-score``; None writes none.
        output_dir, decision_quantile, protocol: as for :class:`OfficialScores`.
    """

    def __init__(self, model: Callable[[], InlierModel] | None = None, fit_subset: str = "fit",
                 fit_domains: Sequence[str] = ("source", "target"), per_domain: bool = False,
                 aggregation: str = "embedding_mean", zscore: bool = False, model_zscore: bool = False,
                 standardize: bool = False, threshold_folds: int = 5, memory_mixup: dict | None = None,
                 plots: bool = True,
                 projection: str = "pca", bundle_dir: str | Path | None = None,
                 output_dir: str | Path = "submission", decision_quantile: float = 0.9,
                 protocol: str = "official") -> None:
        super().__init__(output_dir, decision_quantile, protocol)
        if fit_subset not in FIT_SUBSETS:
            raise UserError(f"fit_subset must be one of {FIT_SUBSETS}, got {fit_subset!r}")
        if aggregation != "embedding_mean" and aggregation not in AGGREGATORS:
            raise UserError(f"aggregation must be embedding_mean or one of {', '.join(AGGREGATORS)}, "
                             f"got {aggregation!r}")
        bad = set(fit_domains) - {"source", "target"}
        if bad or not fit_domains:
            raise UserError(f"fit_domains must be source and/or target, got {list(fit_domains)}")
        if memory_mixup and not (per_domain and "target" in fit_domains and "source" in fit_domains):
            raise UserError("callbacks.inlier.memory_mixup mixes the target memory with source clips: it needs "
                             "per_domain=true and both fit_domains (or set memory_mixup=null)")
        self.fit_subset = fit_subset
        self.fit_domains = list(fit_domains)
        self.aggregation = aggregation
        if threshold_folds < 1:
            raise UserError(f"threshold_folds must be >= 1, got {threshold_folds}")
        self.fitter = SectionFitter(model or (lambda: KNNInlier(k=1)), aggregation, self.fit_domains, per_domain,
                                    model_zscore, zscore, standardize, threshold_folds,
                                    dict(memory_mixup) if memory_mixup else None)
        self.sizing = pd.DataFrame()
        self.plots = plots
        self.projection = projection
        self.bundle_dir = None if bundle_dir is None else Path(bundle_dir)
        self._test: dict[int, np.ndarray] = {}

    def _fit_subsets(self) -> tuple[str, ...]:
        return ("train", "val") if self.fit_subset == "fit" else (self.fit_subset,)

    def _no_fit_clips(self, machine: str, section: int) -> ValueError:
        return ValueError(f"{machine} section {section:02d}: no {self.fit_subset} clips of domain(s) "
                          f"{self.fit_domains} to fit the inlier model on")

    def check_fit_clips(self, clips: pd.DataFrame) -> None:
        """Raise unless every section with test clips has clips to fit its model on (the
        pre-flight check of ``asd-train``, before training)."""
        usable = clips["subset"].isin(self._fit_subsets()) & clips["domain"].isin(self.fit_domains)
        for (machine, section), group in clips.groupby(["machine", "section"]):
            if (group["subset"] == "test").any() and not usable[group.index].any():
                raise self._no_fit_clips(machine, int(section))

    # -- collect test embeddings in the test loop ----------------------------------
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.score_by_embeddings = True  # the test step returns embeddings, not its own scores

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.score_by_embeddings = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        pl_module.score_by_embeddings = False

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test = {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        emb = (outputs or {}).get("segment_embeddings")
        if emb is None:
            with torch.inference_mode():
                emb = pl_module.segment_embeddings(batch["features"])
        self._test.update(zip(batch["clip_id"].cpu().tolist(), clip_rows(emb, self.aggregation == "embedding_mean")))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        test = dict(gather_objects(list(self._test.items())))
        fit = embed_clips(pl_module, datamodule, "fit", clip_mean=self.aggregation == "embedding_mean")
        test_scores, fit_scores = self.score(datamodule.clips, test, fit)
        self.publish(trainer, pl_module, test_scores, fit_scores)
        small = int(self.sizing["reason"].astype(bool).sum()) if len(self.sizing) else 0
        pl_module.log("test/inlier_small_fit_sets", float(small), rank_zero_only=True)
        if trainer.is_global_zero and len(self.sizing):
            self.sizing.to_csv(self.output_dir / "inlier_models.csv", index=False)
        if self.bundle_dir is not None and trainer.is_global_zero and getattr(datamodule, "num_channels", 1) > 1:
            log.warning("no model bundles written: asd-score decodes one channel, this run embeds %d "
                        "(data.channels=both)", datamodule.num_channels)
        elif self.bundle_dir is not None and trainer.is_global_zero:
            for machine in datamodule.machine_types:
                path = self.write_bundle(datamodule, pl_module, machine)
                log.info("model bundle for %s written to %s", machine, path.resolve())
        if self.plots and trainer.is_global_zero:
            scored = test_scores.join(datamodule.clips.set_index("clip_id"), on="clip_id")
            labelled = scored[scored["label"] != "unknown"].reset_index(drop=True)
            if len(labelled) >= 3:
                embeddings = np.stack([test[i].mean(axis=0) for i in labelled["clip_id"]])
                log_figures(trainer, write_figures(labelled, embeddings, datamodule.year,
                                                   self.output_dir / "plots", self.projection))
                log_embedding_table(trainer, labelled, embeddings)

    def write_bundle(self, datamodule, pl_module: L.LightningModule, machine: str) -> Path:
        """Everything ``asd-score`` needs for ``machine``, in ``<bundle_dir>/<machine>``."""
        from asd_lightning.deploy import ModelBundle

        amplitude = None
        if datamodule.amplitude_norm:
            index = datamodule.machine_names.index(machine)
            amplitude = (float(datamodule.amplitude_mean[index]), float(datamodule.amplitude_std[index]))
        bundle = ModelBundle(
            machine=machine, encoder=pl_module, frontend=datamodule.frontend,
            test_segments=dict(datamodule.test_segments), decode_options=datamodule.decode_options,
            scorers={s: sc for (m, s), sc in self.scorers.items() if m == machine},
            threshold=float(self.thresholds[machine]), amplitude=amplitude, year=datamodule.year,
            config_yaml=_run_config_yaml(),
            info={"fit_subset": self.fit_subset, "fit_domains": self.fit_domains, "per_domain": self.fitter.per_domain,
                  "model_zscore": self.fitter.model_zscore, "standardize": self.fitter.standardize,
                  "memory_mixup": self.fitter.memory_mixup,
                  "decision_quantile": self.decision_quantile},
        )
        return bundle.save(self.bundle_dir / machine)

    # -- scoring -------------------------------------------------------------------
    def score(self, clips: pd.DataFrame, test: dict[int, np.ndarray],
              fit: dict[int, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Clip scores of the ``test`` clips and of the ``fit`` clips (for the thresholds).

        ``clips``: the datamodule's clip table; ``test`` / ``fit``: ``clip_id`` → ``[S, D]``.
        The fitted scorers stay in ``self.scorers`` (``(machine, section)`` → scorer), what each
        model was asked for and used in ``self.sizing`` (one row per model; too-small fit sets
        are logged as warnings).
        """
        table = clips.set_index("clip_id")
        subsets = self._fit_subsets()
        ids = np.concatenate([np.array(sorted(fit), dtype=np.int64), np.array(sorted(test), dtype=np.int64)])
        self.scorers: dict[tuple[str, int], SectionScorer] = {}
        test_parts, fit_parts, sizing = [], [], []
        for (machine, section), group in table.loc[ids].groupby(["machine", "section"]):
            section_fit = [i for i in group.index if i in fit]
            section_test = [i for i in group.index if i in test]
            used = [i for i in section_fit if group.at[i, "subset"] in subsets and group.at[i, "domain"] in self.fit_domains]
            if not used:
                if section_test:
                    raise self._no_fit_clips(machine, int(section))
                continue  # nothing to score here, so nothing to fit
            scorer, fit_clip = self.fitter.fit(fit, section_fit, used, group["domain"].to_dict())
            self.scorers[(machine, int(section))] = scorer
            for record in scorer.sizing:
                if record.too_small:
                    log.warning("%s section %02d (%s): %s", machine, section, record.domain, record.describe())
                sizing.append({"machine": machine, "section": int(section), **record.to_dict()})
            if section_test:
                test_parts.append(pd.DataFrame({"clip_id": section_test, "score": scorer([test[i] for i in section_test])}))
            fit_parts.append(pd.DataFrame({"clip_id": section_fit, "score": fit_clip}))
        self.sizing = pd.DataFrame(sizing)
        empty = [pd.DataFrame({"clip_id": [], "score": []})]
        return pd.concat(test_parts or empty, ignore_index=True), pd.concat(fit_parts, ignore_index=True)
