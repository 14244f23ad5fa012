"""After the test loop: clip scores → submission CSVs, decisions and the official DCASE table.

Works with methods that score clips directly (``ASDMethod.clip_scores``). The decision
threshold follows the official baselines: per machine type, the ``decision_quantile``
quantile of a gamma distribution fitted to the scores of that machine's training clips.
Metrics go to every active logger (``test/official_score`` ...); the table is printed and
saved as ``scores.csv`` / ``scores.json`` next to the submission files, and every test and fit
clip's score in ``clip_scores.csv`` (:mod:`asd_lightning.metrics.results`), which ``asd-fuse``
reads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from asd_lightning.metrics.results import data_record, score_run
from asd_lightning.metrics.two_bce_measure import PROTOCOLS, TwoBCEMeasure

log = logging.getLogger(__name__)


def gather_objects(items: list) -> list:
    """Concatenate per-rank Python lists on every rank (identity without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    gathered: list[list] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def clip_batches(pl_module: L.LightningModule, datamodule, subset: str) -> Iterator[dict]:
    """Whole-clip batches of the target machines' ``subset``, on the module's device with their
    features, under ``torch.inference_mode``."""
    with torch.inference_mode():
        for batch in datamodule.clip_dataloader(subset, targets_only=True):
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            yield datamodule.on_after_batch_transfer(batch, 0)


def score_clips(pl_module: L.LightningModule, datamodule, subset: str) -> pd.DataFrame:
    """Run ``pl_module.clip_scores`` over the target machines' whole clips of ``subset``."""
    ids, scores = [], []
    for batch in clip_batches(pl_module, datamodule, subset):
        ids.append(batch["clip_id"].cpu())
        scores.append(pl_module.channel_clip_scores(batch).float().cpu())
    ids = gather_objects(torch.cat(ids).tolist() if ids else [])
    scores = gather_objects(torch.cat(scores).tolist() if scores else [])
    return pd.DataFrame({"clip_id": ids, "score": scores}).drop_duplicates("clip_id")


class OfficialScores(L.Callback):
    """Write ``anomaly_score_*``/``decision_result_*`` CSVs and log the official scores.

    Args:
        output_dir: folder for the submission and score tables (Hydra's run dir by default).
        decision_quantile: gamma quantile of training scores used as the decision threshold.
        protocol: ``official`` (the DCASE table of the data's year) or ``two_bce`` (that table
            plus the two-BCE paper's Table II measure, :class:`TwoBCEMeasure`, printed, logged
            as ``test/two_bce/...`` and saved as ``two_bce_measure.json``).
    """

    def __init__(self, output_dir: str | Path = "submission", decision_quantile: float = 0.9,
                 protocol: str = "official") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.output_dir = Path(output_dir)
        self.decision_quantile = decision_quantile
        self.protocol = protocol
        self.measure: TwoBCEMeasure | None = None
        self._ids: list[int] = []
        self._scores: list[float] = []
        self.report = None
        self.thresholds: dict[str, float] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ids, self._scores = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None or "score" not in outputs:
            return
        self._ids += outputs["clip_id"].cpu().tolist()
        self._scores += outputs["score"].cpu().tolist()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        test = pd.DataFrame({"clip_id": gather_objects(self._ids), "score": gather_objects(self._scores)})
        if test.empty:
            log.warning("OfficialScores: the model returned no clip scores; nothing to write")
            return
        self.publish(trainer, pl_module, test, score_clips(pl_module, trainer.datamodule, "fit"))

    def publish(self, trainer: L.Trainer, pl_module: L.LightningModule, test: pd.DataFrame,
                fit: pd.DataFrame) -> None:
        """Test clip scores (``clip_id``, ``score``) → decisions, official metrics and files.

        ``fit``: scores of the training clips, for the per-machine gamma decision thresholds
        (and, saved in ``clip_scores.csv``, for score fusion).
        """
        datamodule = trainer.datamodule
        clips = datamodule.clips.set_index("clip_id")
        run = score_run(test.drop_duplicates("clip_id").join(clips, on="clip_id"), fit.join(clips, on="clip_id"),
                        datamodule.year, self.decision_quantile)
        if "path" in run.test.columns and getattr(datamodule, "root", None) is not None:
            run.data = data_record(datamodule.root, run.test)
        self.thresholds, self.report, self.measure = run.thresholds, run.report, None
        if run.report is None and trainer.is_global_zero:
            log.warning("no test clip of %s is labelled (evaluation clips need their ground truth), so there are "
                        "no scores: the submission files and decisions are written without a score table; for "
                        "scores set data.ground_truth=<the official ground-truth CSVs or folder>",
                        ", ".join(sorted(run.test["machine"].unique())))
        if run.report is not None:
            metrics = run.report.metrics_dict(prefix="test/")
            if self.protocol == "two_bce":
                self.measure = TwoBCEMeasure.from_report(run.report)
                metrics.update(self.measure.metrics_dict())
            pl_module.log_dict({k: float(v) for k, v in metrics.items() if np.isfinite(v)}, rank_zero_only=True)
        if trainer.is_global_zero:
            run.save(self.output_dir)
            if run.report is not None:
                print(run.report.format_table())
            if self.measure is not None:
                self.measure.save(self.output_dir)
                print(self.measure.format_table())
            log.info("submission files written to %s", self.output_dir.resolve())
