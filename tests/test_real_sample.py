"""The real DCASE 2023 recordings in ../shared/data/dcase2023-sample: parsing, decoding, features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asd_lightning.data import DCASE2022DataModule, build_clip_index

MACHINES = ["ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"]


def test_real_sample_is_parsed_completely(shared_sample: Path) -> None:
    index = build_clip_index(shared_sample, 2023)
    assert len(index) == 28 and sorted(index["machine"].unique()) == MACHINES
    assert (index.groupby(["machine", "split"]).size() == 2).all()
    row = index[index["file"] == "section_00_source_test_normal_0028_car_C2_spd_34V_mic_1.wav"].iloc[0]
    assert row["attributes"] == {"car": "C2", "spd": "34V", "mic": "1"}
    assert (row["domain"], row["split"], row["label"], row["clip"]) == ("source", "test", "normal", 28)
    fan = index[index["file"] == "section_00_source_test_anomaly_0022_m-n_W.wav"].iloc[0]
    assert fan["attributes"] == {"m-n": "W"} and fan["label"] == "anomaly"
    assert index[index["machine"] == "slider"]["attributes"].iloc[0].keys() == {"vel", "ac"}


def test_real_sample_decodes_and_featurizes(shared_sample: Path, tmp_path: Path) -> None:
    dm = DCASE2022DataModule(root=shared_sample, year=2023, machine_types=MACHINES, cache_dir=tmp_path,
                             progress=False, val_fraction=0.0, batch_size=4, eval_batch_size=4,
                             test_segments={"kind": "windows", "frames": 64, "hop": 8}, train_crop={"frames": 64})
    dm.prepare_data()
    dm.setup()
    lengths = dict(zip(dm.clips["machine"], dm.table.lengths))
    assert lengths["ToyCar"] == lengths["ToyTrain"] == 12 * 16000  # ToyADMOS2 clips are 12 s
    assert lengths["fan"] == lengths["valve"] == 10 * 16000
    path = dm.clips["path"].iloc[0]
    assert np.array_equal(dm.table.waveform(0), sf.read(path, dtype="int16")[0])
    seen = 0
    for batch in dm.test_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        frames = batch["wave"].shape[1] // 512 + 1  # 313 for 10 s, 376 for 12 s
        assert batch["features"].shape[1:] == ((frames - 64) // 8 + 1, 1, 128, 64)
        assert torch.isfinite(batch["features"]).all()
        seen += len(batch["clip_id"])
    assert seen == 14
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["features"].shape == (4, 1, 128, 64)
    # real machine sound: energy spread over the spectrum, not silence
    assert batch["features"].std() > 1.0
