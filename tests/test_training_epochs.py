"""What an epoch is, checked through a real Lightning ``Trainer``: every epoch draws a new
plan from every training sampler (Lightning's epoch hook reaches the custom batch samplers),
outlier exposure sees all other machines' clips, an epoch of ``per_clip: all`` covers every
window once, and crops do not depend on the loader workers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from asd_lightning.data import DCASE2022DataModule
from conftest import make_2022


class Recorder(L.LightningModule):
    """Records what each training step sees; one parameter so that the optimiser steps."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[dict] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append({"epoch": self.current_epoch, "clip_id": batch["clip_id"].tolist(),
                          "is_target": batch["is_target"].tolist(), "wave": batch["wave"].double().sum().item(),
                          "draw": torch.rand(()).item()})  # the global RNG stream the methods' mixup uses
        return (self.w * batch["wave"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def epochs(self) -> list[list[dict]]:
        return [[s for s in self.seen if s["epoch"] == e] for e in sorted({s["epoch"] for s in self.seen})]


def fit(dm: DCASE2022DataModule, epochs: int, seed: int = 0) -> Recorder:
    L.seed_everything(seed)
    model = Recorder()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    return model


@pytest.fixture
def three_machines(tmp_path: Path) -> Path:
    return make_2022(tmp_path / "d", machines=("fan", "valve", "pump"), sections=(0, 1), n_train=10, n_test=1,
                     seconds=1.0)


def datamodule(root: Path, tmp_path: Path, **kwargs) -> DCASE2022DataModule:
    settings = dict(root=root, machine_types=["fan"], cache_dir=tmp_path / "cache", batch_size=4, val_fraction=0.0,
                    num_workers=0, progress=False, train_crop={"seconds": 0.25}, seed=3)
    settings.update(kwargs)
    return DCASE2022DataModule(**settings)


@pytest.mark.parametrize("sampler", ["random", "same_machine_pairs", "target_vs_outliers"])
def test_every_epoch_is_a_new_epoch_through_a_trainer(three_machines: Path, tmp_path: Path, sampler: str) -> None:
    # 22 fan clips: batches of 2 clips, 2 pairs, or 2 target + 2 other clips leave none out
    extra = {"outlier_machine_types": "all", "batch_size": 4} if sampler == "target_vs_outliers" else {"batch_size": 2}
    dm = datamodule(three_machines, tmp_path, sampler=sampler, **extra)
    epochs = fit(dm, 3).epochs()
    plans = [[tuple(s["clip_id"]) for s in epoch] for epoch in epochs]
    assert all(len(p) == len(plans[0]) > 0 for p in plans)
    assert len(set(map(tuple, plans))) == 3  # three different epochs, not one epoch three times
    crops = [[s["wave"] for s in epoch] for epoch in epochs]
    assert crops[0] != crops[1]
    # every target clip once per epoch (as first partner for pairs)
    targets = sorted(dm.rows("train", targets_only=True).tolist())
    half = len(plans[0][0]) // 2
    for plan in plans:
        first = sorted(i for batch in plan for i in (batch if sampler == "random" else batch[:half]))
        assert first == targets


def test_outlier_exposure_sees_every_other_machine_clip(three_machines: Path, tmp_path: Path) -> None:
    """fan: 22 target clips in batches of 2 + 2 → 22 outliers an epoch; valve + pump: 44 clips.
    Epochs 0 and 1 together show each of them exactly once (stuck at epoch 0, half never appear)."""
    dm = datamodule(three_machines, tmp_path, sampler="target_vs_outliers", outlier_machine_types="all")
    epochs = fit(dm, 3).epochs()
    outliers = set(np.flatnonzero(~dm.clips["machine"].eq("fan").to_numpy() & dm.clips["subset"].eq("train").to_numpy()))
    seen = [[i for s in epoch for i, t in zip(s["clip_id"], s["is_target"]) if not t] for epoch in epochs]
    assert all(len(epoch) == 22 for epoch in seen) and len(outliers) == 44
    assert len(set(seen[0]) | set(seen[1])) == 44 and set(seen[0]) | set(seen[1]) == outliers
    assert set(seen[2]) <= outliers and set(seen[2]) != set(seen[0])  # the stream goes on, reshuffled


def test_crops_and_mixup_draws_do_not_depend_on_loader_workers(three_machines: Path, tmp_path: Path) -> None:
    runs = [fit(datamodule(three_machines, tmp_path, num_workers=workers), 2).seen for workers in (0, 2)]
    assert [s["clip_id"] for s in runs[0]] == [s["clip_id"] for s in runs[1]]
    assert [s["wave"] for s in runs[0]] == [s["wave"] for s in runs[1]]
    assert [s["draw"] for s in runs[0]] == [s["draw"] for s in runs[1]]


def test_an_epoch_of_all_windows_covers_every_window_once(tmp_path: Path) -> None:
    """1 s clips, 16-frame windows every 4 frames (hop 256): (16000 - 15·256) // 1024 + 1 = 12
    windows per clip; 22 fan clips → 264 windows → 66 pair batches of 2 + 2."""
    root = make_2022(tmp_path / "d", machines=("fan",), sections=(0, 1), n_train=10, n_test=1, seconds=1.0)
    dm = datamodule(root, tmp_path, sampler="same_machine_pairs", batch_size=2,
                    features={"n_fft": 512, "hop_length": 256, "n_mels": 32},
                    train_crop={"frames": 16, "hop": 4, "per_clip": "all"})
    epochs = fit(dm, 2).epochs()
    dataset = dm.crop_dataset("train", random=False)
    assert len(dataset) == 22 * 12 and len(epochs[0]) == len(dm.train_dataloader()) == 22 * 12 // 2
    windows = sorted(zip(dataset.rows.tolist(), dataset.fixed_starts.tolist()))
    assert windows == sorted((r, k * 1024) for r in dm.rows("train").tolist() for k in range(12))
    for epoch in epochs:  # each clip once per window as a first partner
        first = [i for s in epoch for i in s["clip_id"][:2]]
        assert sorted(first) == sorted(dataset.rows.tolist())


def test_window_crops_give_the_whole_clip_log_mel_windows(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "d", machines=("fan",), sections=(0,), n_train=3, n_test=1, seconds=1.0)
    dm = datamodule(root, tmp_path, features={"n_fft": 512, "hop_length": 256, "n_mels": 32},
                    train_crop={"frames": 16, "hop": 4, "per_clip": "all"},
                    test_segments={"kind": "windows", "frames": 16, "hop": 4})
    dm.setup("fit")
    dataset = dm.crop_dataset("train", random=False)
    batch = dm.on_after_batch_transfer(dataset.__getitems__(list(range(12))), 0)  # the 12 windows of one clip
    row = int(dataset.rows[0])
    assert (dataset.rows[:12] == row).all()
    wave = torch.from_numpy(np.array(dm.table.waveform(row)))[None]
    whole = dm.on_after_batch_transfer({"wave": wave, "machine": torch.zeros(1, dtype=torch.long),
                                        "whole_clip": True}, 0)["features"][0]  # [12, 1, 32, 16]
    assert whole.shape[0] == 12
    # the same frames, the first and last included: the crops carry the clip's neighbouring
    # samples (reflected at its ends, as the whole clip's padding), not padding of their own
    assert dm.crop_context_frames == 1 and batch["wave"].shape[-1] == 15 * 256 + 2 * 256
    assert torch.allclose(batch["features"], whole, atol=1e-3)
