"""Two DDP processes on the CPU (gloo, spawned; no CSV logger, whose file a re-spawned test
phase cannot extend): training runs on disjoint batches per rank and a new plan every epoch,
and the inlier callback scores every test clip once, exactly as a single process scores the
same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from asd_lightning.data import DCASE2022DataModule
from asd_lightning.eval import evaluate_checkpoint
from asd_lightning.metrics import read_submission
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train
from test_training_epochs import Recorder


@pytest.mark.slow
def test_ddp_two_processes_match_a_single_process(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=8, n_test=3, seconds=2.5)
    data = [f"data.root={root}", "data.machine_types=[fan]", "data.num_workers=0", "data.batch_size=4",
            f"data.cache_dir={tmp_path / 'cache'}", "logger=none", "trainer.accelerator=cpu",
            "experiment=ae_baseline", "callbacks.inlier.plots=false", "callbacks.inlier.bundle_dir=null"]
    cfg = compose_train(data + ["callbacks=inlier", "trainer.max_epochs=1", "trainer.devices=2",
                                "+trainer.strategy=ddp_spawn"], tmp_path / "ddp")
    train(cfg)
    ddp = read_submission(tmp_path / "ddp" / "submission", 2022)
    assert len(ddp) == 2 * 2 * 2 * 3 and ddp["file"].is_unique  # every test clip, once

    cfg = compose_train(data + [f"ckpt_path={tmp_path / 'ddp' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "single",
                        config_name="eval.yaml")
    evaluate_checkpoint(cfg)
    single = read_submission(tmp_path / "single" / "submission", 2022)
    merged = ddp.merge(single, on=["machine", "section", "file"], suffixes=("_ddp", "_single"))
    assert len(merged) == len(ddp)
    assert merged["score_single"].std() > 0.1  # scores that differ by far more than the tolerance
    assert np.allclose(merged["score_ddp"], merged["score_single"], rtol=1e-4, atol=1e-5)


class RankRecorder(Recorder):
    """Saves what this rank trained on when training ends (spawned ranks share no memory)."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self) -> None:
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "target_vs_outliers"])
def test_ddp_ranks_train_on_disjoint_batches_and_every_epoch_is_new(tmp_path: Path, sampler: str) -> None:
    root = make_2022(tmp_path / "d", machines=("fan", "valve"), sections=(0, 1), n_train=10, n_test=1, seconds=0.5)
    dm = DCASE2022DataModule(root=root, machine_types=["fan"], cache_dir=tmp_path / "cache", batch_size=4,
                             val_fraction=0.0, num_workers=0, progress=False, train_crop={"seconds": 0.25},
                             sampler=sampler, outlier_machine_types="all" if sampler != "random" else [])
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.fit(RankRecorder(tmp_path), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    half = 2 if sampler != "random" else 4  # target clips per batch
    for epoch in (0, 1):
        shards = [[s["clip_id"][:half] for s in seen if s["epoch"] == epoch] for seen in ranks]
        assert len(shards[0]) == len(shards[1]) > 0  # equal steps, or DDP hangs
        clips = [set(i for batch in shard for i in batch) for shard in shards]
        assert not clips[0] & clips[1]  # disjoint target clips within the epoch
    per_epoch = [[s["clip_id"] for s in ranks[0] if s["epoch"] == e] for e in (0, 1)]
    assert per_epoch[0] != per_epoch[1]
