"""Two DDP processes on the CPU (gloo, spawned; no CSV logger, whose file a re-spawned test
phase cannot extend): training runs, and the inlier callback scores every test clip once,
exactly as a single process scores the same checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asd_lightning.eval import evaluate_checkpoint
from asd_lightning.metrics import read_submission
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train


@pytest.mark.slow
def test_ddp_two_processes_match_a_single_process(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=8, n_test=3, seconds=2.5)
    data = [f"data.root={root}", "data.machine_types=[fan]", "data.num_workers=0", "data.batch_size=4",
            f"data.cache_dir={tmp_path / 'cache'}", "logger=none", "trainer.accelerator=cpu",
            "experiment=mobilenetv2_baseline", "callbacks.inlier.plots=false", "callbacks.inlier.bundle_dir=null"]
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
    assert np.allclose(merged["score_ddp"], merged["score_single"], rtol=1e-4, atol=1e-5)
