"""``callbacks=[...,channels_last]``: weights stored channels-last through a real run, same results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train


@pytest.mark.parametrize("callbacks", ["[default,channels_last]", "[inlier,channels_last]"])
def test_channels_last_composes_with_a_callback_set(callbacks: str, tmp_path: Path) -> None:
    cfg = compose_train(["experiment=mobilenetv2_baseline", f"callbacks={callbacks}"], tmp_path)
    assert cfg.callbacks.channels_last._target_ == "asd_lightning.callbacks.memory_format.ChannelsLast"
    assert "model_checkpoint" in cfg.callbacks  # the set it joins is kept


def test_channels_last_trains_the_same_model(tmp_path: Path) -> None:
    """Two 1-epoch MobileNetV2 runs, default layout and channels-last: every conv weight of the
    second is stored channels-last and all weights and the official score equal the first's up to
    float rounding. Catches (tried once): the callback converting nothing (layout assertion), and
    converting at ``setup``, before ``configure_model`` builds the classifier (its first convolution keeps the default layout)."""
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=6, n_test=2, seconds=2.5)
    runs = {}
    for name, callbacks in (("plain", "default"), ("nhwc", "[default,channels_last]")):
        cfg = compose_train([f"data.root={root}", "data.machine_types=[fan]", "data.num_workers=0",
                             f"data.cache_dir={tmp_path / 'cache'}", "logger=none", "trainer.accelerator=cpu",
                             "experiment=mobilenetv2_baseline", f"callbacks={callbacks}", "trainer.max_epochs=1",
                             "data.batch_size=4", "data.features.n_mels=32"],
                            tmp_path / name)
        metrics = train(cfg)
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        runs[name] = (metrics, state["state_dict"])
    (plain_metrics, plain), (nhwc_metrics, nhwc) = runs["plain"], runs["nhwc"]
    convs = [k for k, v in nhwc.items() if v.dim() == 4 and v.shape[1] * v.shape[2] * v.shape[3] > 1]
    assert convs and all(nhwc[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    assert not all(plain[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    for key, value in plain.items():
        torch.testing.assert_close(nhwc[key].float(), value.float(), rtol=1e-3, atol=1e-4)  # float rounding through 17 blocks: ~2e-4
    assert nhwc_metrics["test/official_score"] == pytest.approx(plain_metrics["test/official_score"], abs=1e-3)
