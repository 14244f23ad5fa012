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
import torch
from lightning.pytorch.utilities import CombinedLoader

from asd_lightning.data import DCASE2022DataModule
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


SAMPLER_SETTINGS = {  # loader name → datamodule settings (fan: 2 sections x (10 source + 1 target) clips)
    "random": {"sampler": "random"},
    # classes (section, attribute, domain) of 10, 1, 10 and 1 clips: the target clips oversampled
    "balanced": {"sampler": "balanced_classes", "labels": "attribute_domain"},
    # the DG-Mix pairs over two machine types: items k and k + 2 of a batch share one
    "pairs": {"sampler": "same_machine_pairs", "machine_types": ["fan", "valve"], "batch_size": 2},
    "outliers": {"sampler": "target_vs_outliers", "outlier_machine_types": "all"},  # fan + 2 valve per batch
}


class SamplerLoaders(L.LightningDataModule):
    """One training loader per sampler, each built by its own datamodule (attached to the
    trainer, as ``asd-train`` attaches it), iterated side by side (``max_size``: every loader
    once per epoch), so that one DDP run covers every sampler."""

    def __init__(self, modules: dict[str, DCASE2022DataModule]) -> None:
        super().__init__()
        self.modules = modules

    def prepare_data(self) -> None:
        for dm in self.modules.values():
            dm.prepare_data()

    def setup(self, stage: str) -> None:
        for dm in self.modules.values():
            dm.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        loaders = {}
        for name, dm in self.modules.items():
            dm.trainer = self.trainer
            loaders[name] = dm.train_dataloader()
        return CombinedLoader(loaders, mode="max_size")


class LoaderRecorder(L.LightningModule):
    """Saves the clip ids of every loader's batches, per epoch, when training ends (spawned
    ranks share no memory)."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[dict] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append({"epoch": self.current_epoch, **{name: b["clip_id"].tolist() for name, b in batch.items()
                                                           if b is not None}})
        return self.w.sum() * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_train_end(self) -> None:
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
def test_every_sampler_under_ddp_shards_one_plan_per_epoch_into_disjoint_rank_batches(tmp_path: Path) -> None:
    """Two spawned CPU ranks, two epochs, the four training samplers in one run. Each rank
    trains on every other batch of the same epoch plan (the plan the sampler draws from
    ``(seed, epoch)``), so the ranks' target clips, and the outlier halves of the two-BCE
    batches, are disjoint within an epoch, and Lightning's ``set_epoch`` gives a new plan every
    epoch. Breaks caught (each tried): ranks that do not shard (both train on the same
    batches), outlier halves drawn from a stream seeded per rank (overlapping pseudo-anomalies),
    a sampler stuck at epoch 0 (``set_epoch`` without effect)."""
    root = make_2022(tmp_path / "d", machines=("fan", "valve"), sections=(0, 1), n_train=10, n_test=1, seconds=0.5)
    common = dict(root=root, machine_types=["fan"], cache_dir=tmp_path / "cache", batch_size=4, val_fraction=0.0,
                  num_workers=0, progress=False, train_crop={"seconds": 0.25}, seed=3)
    modules = {name: DCASE2022DataModule(**{**common, **extra}) for name, extra in SAMPLER_SETTINGS.items()}
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.fit(LoaderRecorder(tmp_path), datamodule=SamplerLoaders(modules))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0  # equal steps, or DDP hangs

    for name, dm in modules.items():
        dm.setup("fit")  # the plans, drawn here in one process
        dataset = dm.crop_dataset("train", random=True)
        sampler = dm.train_batch_sampler(dataset)
        plans = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            plan = [dataset.rows[batch].tolist() for batch in sampler.epoch_plan()]
            shards = [[s[name] for s in seen if s["epoch"] == epoch and name in s] for seen in ranks]
            assert len(shards[0]) == len(shards[1]) == len(plan) // 2 > 1, name
            assert shards[0] == plan[0:2 * len(shards[0]):2] and shards[1] == plan[1:2 * len(shards[1]):2], name
            plans.append(plan)
            if name == "balanced":  # drawn with replacement: the ranks' batches are other draws
                continue
            half = len(plan[0]) // 2 if name != "random" else len(plan[0])
            targets = [{i for batch in shard for i in batch[:half]} for shard in shards]
            assert targets[0] and not targets[0] & targets[1], name  # disjoint target clips (first partners)
            if name == "outliers":
                others = [[i for batch in shard for i in batch[half:]] for shard in shards]
                assert not set(others[0]) & set(others[1]) and len(set(others[0] + others[1])) == 2 * len(others[0])
                assert set(others[0]) <= set(dm.rows("train")) - set(dm.rows("train", targets_only=True))
            if name == "pairs":
                machine = dm.clips["machine"].to_numpy()
                assert all(machine[b[k]] == machine[b[k + half]] for shard in shards for b in shard
                           for k in range(half))
        assert plans[0] != plans[1], name  # a new plan every epoch
    balanced = [i for seen in ranks for s in seen for i in s.get("balanced", [])]
    is_target = modules["balanced"].clips["domain"].eq("target").to_numpy()
    # 2 of 22 clips are target-domain clips, half of the classes: drawn about half the time
    assert 0.3 < is_target[balanced].mean() < 0.7
