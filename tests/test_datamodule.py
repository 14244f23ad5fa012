"""DCASE datamodules: selection, validation split, samplers, device-side features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asd_lightning.data import DCASE2021DataModule, DCASE2022DataModule
from asd_lightning.data import samplers
from asd_lightning.data.samplers import (
    EqualLengthBatchSampler,
    OutlierExposureBatchSampler,
    SameMachinePairBatchSampler,
)
from conftest import make_2022, write_wav


def module(root: Path, tmp_path: Path, **kwargs) -> DCASE2022DataModule:
    settings = dict(root=root, machine_types=["fan"], cache_dir=tmp_path / "cache", batch_size=4,
                    eval_batch_size=3, progress=False, train_crop={"seconds": 0.5})
    settings.update(kwargs)
    dm = DCASE2022DataModule(**settings)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def transfer(dm, batch):
    return dm.on_after_batch_transfer(batch, 0)


@pytest.fixture
def big_2022(tmp_path: Path) -> Path:
    return make_2022(tmp_path / "d", machines=("fan", "valve", "pump"), sections=(0, 1), n_train=10, n_test=2,
                     seconds=1.0, eval_section=3)


def test_selection_classes_and_stratified_validation(big_2022: Path, tmp_path: Path) -> None:
    dm = module(big_2022, tmp_path, val_fraction=0.2)
    clips = dm.clips
    assert set(clips["machine"]) == {"fan"}
    # sections 0, 1 (dev) and 3 (eval: 10 train clips) are section classes of the target machine
    assert dm.section_classes == [("fan", 0), ("fan", 1), ("fan", 3)]
    val = clips[clips["subset"] == "val"]
    # 20% of the 10 source clips of every section, none of the single target clip
    assert val.groupby(["section", "domain"]).size().to_dict() == {(0, "source"): 2, (1, "source"): 2, (3, "source"): 2}
    assert set(clips.loc[clips["subset"] == "test", "split"]) == {"test"}
    assert len(dm.rows("train")) + len(val) == (clips["split"] == "train").sum()


def test_training_batch_on_the_device(big_2022: Path, tmp_path: Path) -> None:
    dm = module(big_2022, tmp_path, features={"n_fft": 512, "hop_length": 256, "n_mels": 32})
    batch = transfer(dm, next(iter(dm.train_dataloader())))
    assert batch["features"].shape == (4, 1, 32, 8000 // 256 + 1)
    assert batch["wave"].dtype == torch.float32 and batch["wave"].shape == (4, 8000)
    assert set(batch) >= {"clip_id", "machine", "section", "domain", "label", "is_target"}
    assert (batch["label"] == 0).all() and (batch["is_target"] == 1).all()


def test_batched_crops_are_slices_of_their_clips(big_2022: Path, tmp_path: Path) -> None:
    from asd_lightning.data.datasets import CropDataset

    dm = module(big_2022, tmp_path, val_fraction=0.2)
    torch.manual_seed(0)
    for random in (True, False):
        dataset = CropDataset(dm.table, dm.rows("train"), 4000, random=random, seed=7)
        batch = dataset.__getitems__(list(range(len(dataset))))
        starts = set()
        for i, row in enumerate(dataset.rows):
            clip = torch.from_numpy(np.array(dm.table.waveform(row)))
            crop = batch["wave"][i]
            found = [s for s in range(len(clip) - 4000 + 1) if torch.equal(clip[s:s + 4000], crop)]
            assert found, f"crop {i} is not a slice of clip row {row}"
            starts.add(found[0])
            assert batch["clip_id"][i] == dm.table.meta["clip_id"][row]
            # one item through __getitem__ is the same as through the batched path
            if not random:
                assert torch.equal(dataset[i]["wave"], crop)
        assert len(starts) > 1  # positions vary across clips


def test_amplitude_statistics_use_training_clips_only(big_2022: Path, tmp_path: Path) -> None:
    dm = module(big_2022, tmp_path, val_fraction=0.2)
    rows = dm.rows("train")
    samples = np.concatenate([dm.table.waveform(r) for r in rows]).astype(np.float64) / 32768
    assert dm.amplitude_mean[0].item() == pytest.approx(samples.mean(), abs=1e-6)
    assert dm.amplitude_std[0].item() == pytest.approx(samples.std(), rel=1e-5)
    clip = next(iter(dm.clip_dataloader("train")))
    wave = transfer(dm, clip)["wave"]
    assert wave.mean().abs() < 0.05 and (wave.std() - 1).abs() < 0.1


def test_whole_clip_segments_for_each_paper(big_2022: Path, tmp_path: Path) -> None:
    dm = module(big_2022, tmp_path, features={"n_fft": 1024, "hop_length": 512, "n_mels": 128},
                test_segments={"kind": "windows", "frames": 16, "hop": 8})
    batch = transfer(dm, next(iter(dm.test_dataloader())))
    assert batch["features"].shape == (3, 3, 1, 128, 16)  # 1 s → 32 frames → (32 - 16) // 8 + 1 windows
    dm.test_segments = {"kind": "crops", "seconds": 0.5, "num": 4}
    assert transfer(dm, next(iter(dm.test_dataloader())))["features"].shape == (3, 4, 1, 128, 16)
    dm.test_segments = {"kind": "clip"}
    assert transfer(dm, next(iter(dm.test_dataloader())))["features"].shape == (3, 1, 128, 32)
    ids = torch.cat([b["clip_id"] for b in dm.test_dataloader()])
    assert sorted(ids.tolist()) == dm.rows("test").tolist()  # every test clip exactly once


def test_equal_length_batches_with_mixed_clip_lengths(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "d", machines=("fan",), sections=(0,), n_train=3, n_test=2, seconds=1.0)
    for i in range(3):
        write_wav(root / "dev_data" / "fan" / "test" / f"section_00_source_test_normal_{10 + i:04d}_a_0_b_0.wav", 1.5)
    dm = module(root, tmp_path)
    for batch in dm.test_dataloader():
        assert batch["wave"].shape[1] in (16000, 24000)
    assert sum(len(b["clip_id"]) for b in dm.test_dataloader()) == len(dm.rows("test"))


def test_outlier_exposure_batches_are_one_to_one(big_2022: Path, tmp_path: Path) -> None:
    dm = module(big_2022, tmp_path, outlier_machine_types="all", sampler="target_vs_outliers", batch_size=8)
    assert dm.outlier_types == ["pump", "valve"]
    for batch in dm.train_dataloader():
        assert batch["is_target"].tolist() == [1] * 4 + [0] * 4
        assert (batch["section"][4:] == -1).all() and (batch["section"][:4] >= 0).all()


def test_same_machine_pair_batches(big_2022: Path, tmp_path: Path) -> None:
    # batch_size counts pairs: 3 first items + their 3 partners of the same machine type
    dm = module(big_2022, tmp_path, machine_types=["fan", "valve"], sampler="same_machine_pairs", batch_size=3)
    batches = list(dm.train_dataloader())
    assert len(batches) > 0
    for batch in batches:
        assert len(batch["machine"]) == 6
        assert torch.equal(batch["machine"][:3], batch["machine"][3:])


def test_samplers_are_deterministic_per_epoch() -> None:
    sampler = OutlierExposureBatchSampler(np.array([1] * 10 + [0] * 7), batch_size=4, seed=3)
    first = list(sampler)
    assert first == list(sampler) and len(first) == len(sampler) == 5
    sampler.set_epoch(1)
    assert list(sampler) != first
    targets = sorted(i for batch in first for i in batch[:2])
    assert targets == list(range(10))
    pairs = SameMachinePairBatchSampler(np.array([0] * 6 + [1] * 4), pairs=2, seed=0)
    for batch in pairs:
        machine = [0 if i < 6 else 1 for i in batch]
        assert machine[:2] == machine[2:]


def per_rank(sampler, world: int, monkeypatch) -> list[list[list[int]]]:
    """The batches each of ``world`` DDP ranks draws from ``sampler`` this epoch."""
    shards = []
    for rank in range(world):
        monkeypatch.setattr(samplers, "_rank_and_world", lambda rank=rank: (rank, world))
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    monkeypatch.setattr(samplers, "_rank_and_world", lambda: (0, 1))
    return shards


def test_training_samplers_split_an_epoch_between_ranks(monkeypatch) -> None:
    for sampler in (OutlierExposureBatchSampler(np.array([1] * 22 + [0] * 7), batch_size=4, seed=3),
                    SameMachinePairBatchSampler(np.array([0] * 12 + [1] * 9), pairs=2, seed=1)):
        sampler.set_epoch(2)
        whole = list(sampler)  # 11 batches (2 ranks leave the 11th out) and 10
        shards = per_rank(sampler, 2, monkeypatch)
        assert len(shards[0]) == len(shards[1]) == len(whole) // 2  # equal steps, or DDP hangs
        batches = [tuple(b) for shard in shards for b in shard]
        assert len(set(batches)) == len(batches) and set(batches) <= {tuple(b) for b in whole}
        half = sampler.half  # the first halves (target clips, first partners) are disjoint across ranks
        seen = [i for shard in shards for b in shard for i in b[:half]]
        assert len(seen) == len(set(seen)) == 2 * (len(whole) // 2) * half


def test_evaluation_sampler_gives_every_clip_to_exactly_one_rank(monkeypatch) -> None:
    lengths = np.array([160] * 7 + [320] * 4)
    sampler = EqualLengthBatchSampler(lengths, batch_size=3)
    shards = per_rank(sampler, 3, monkeypatch)
    clips = sorted(i for shard in shards for b in shard for i in b)
    assert clips == list(range(len(lengths)))
    assert all(len(set(lengths[b])) == 1 for shard in shards for b in shard)


def test_2021_module_reads_domain_test_folders(tmp_path: Path) -> None:
    base = tmp_path / "d" / "gearbox"
    for i in range(4):
        write_wav(base / "train" / f"section_00_source_train_normal_{i:04d}_volt_1.0.wav", 0.6, seed=i)
    write_wav(base / "source_test" / "section_00_source_test_anomaly_0000.wav", 0.6)
    write_wav(base / "target_test" / "section_00_target_test_normal_0000.wav", 0.6)
    dm = DCASE2021DataModule(root=tmp_path / "d", machine_types=["gearbox"], cache_dir=tmp_path / "c",
                             progress=False, val_fraction=0.0, train_crop={"seconds": 0.5})
    dm.setup()
    test = dm.clips[dm.clips["subset"] == "test"].set_index("file")
    assert test.loc["section_00_target_test_normal_0000.wav", "domain"] == "target"
    assert dm.val_dataloader() == []
    with pytest.raises(ValueError, match="2021 layout, got year 2022"):
        DCASE2021DataModule(root=tmp_path, year=2022)


def test_unknown_machine_type_is_a_clear_error(big_2022: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['bearing'\] not found"):
        module(big_2022, tmp_path, machine_types=["bearing"])


def test_training_samplers_keep_a_partial_batch_when_there_is_no_full_one() -> None:
    """Fewer target clips than half a 1:1 batch (or pairs than a pair batch) still train: the
    epoch is one partial batch rather than nothing."""
    few = OutlierExposureBatchSampler(np.array([1] * 3 + [0] * 9), batch_size=8, seed=0)
    assert len(few) == 1 and [len(b) for b in few] == [6]  # 3 target clips + 3 others
    pairs = SameMachinePairBatchSampler(np.array([0] * 3), pairs=4, seed=0)
    assert len(pairs) == 1 and [len(b) for b in pairs] == [6]
    enough = OutlierExposureBatchSampler(np.array([1] * 9 + [0] * 9), batch_size=8, seed=0)
    assert [len(b) for b in enough] == [8, 8]  # two full batches; the ninth target clip waits


def test_pin_memory_follows_the_trainers_device_unless_set(big_2022: Path, tmp_path: Path, monkeypatch) -> None:
    """``pin_memory: null`` pins batches exactly when the attached trainer's device is CUDA; a set
    value wins. Catches (tried once): the setting ignored, so the loader never pins."""
    import lightning as L

    def loader_pins(pin_memory, device: str | None) -> bool:
        dm = DCASE2022DataModule(root=big_2022, machine_types=["fan"], cache_dir=tmp_path / "cache",
                                 pin_memory=pin_memory, train_crop={"frames": 16}, progress=False)
        dm.prepare_data()
        dm.setup("fit")
        if device is not None:
            trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
            monkeypatch.setattr(type(trainer.strategy), "root_device", property(lambda self: torch.device(device)))
            dm.trainer = trainer
        return dm.train_dataloader().pin_memory

    assert loader_pins(None, None) is False and loader_pins(None, "cpu") is False
    assert loader_pins(None, "cuda") is True
    assert loader_pins(False, "cuda") is False and loader_pins(True, "cpu") is True


def test_requested_test_sections_partly_absent_are_named_in_a_warning(tmp_path: Path, caplog) -> None:
    """A protocol's test sections (two-BCE's IDs 03-05) of which a copy holds only some: the run
    scores what is there and says which are missing. Catches (tried once): the check left out,
    so a partial evaluation passes for the requested one."""
    import logging

    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=2, n_test=1)
    dm = DCASE2022DataModule(root=root, machine_types=["fan"], cache_dir=tmp_path / "cache", test_sections=[1, 2, 3],
                             train_crop={"frames": 16}, progress=False)
    with caplog.at_level(logging.WARNING, logger="asd_lightning.data.datamodule"):
        dm.prepare_data()
        dm.setup("test")
    assert "data.test_sections=[1, 2, 3]: fan has no test clips of section(s) 02, 03" in caplog.text
    assert "only 01 are scored" in caplog.text
