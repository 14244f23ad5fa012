"""On a CUDA device (``pytest -m gpu`` on a GPU machine; skipped elsewhere, see conftest): the
log-mel front end computes there what the CPU computes (models trained on a GPU are scored by
``asd-score`` on CPUs), and a bf16-mixed training run (``trainer=gpu``) goes through
``asd-train`` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asd_lightning.features.log_mel import LogMel
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train

pytestmark = pytest.mark.gpu
DEVICE = "cuda"


def test_the_log_mel_on_the_gpu_equals_the_cpu_front_end() -> None:
    """The CPU path is the front end's own chunked transform, CUDA runs torchaudio's. Breaks it
    would catch (not tried: no CUDA device here): the two paths with other windows, padding,
    filterbanks or log floors (a model trained on a GPU would then score other features on the CPU)."""
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    waves = torch.stack([0.3 * torch.sin(2 * np.pi * f * t) + 0.05 * torch.randn(16000) for f in (300, 440, 1000)])
    for settings in ({}, {"n_mels": 64, "n_fft": 512, "hop_length": 256}, {"log": False}):
        frontend = LogMel(**settings)
        cpu = frontend(waves)
        gpu = frontend.to(DEVICE)(waves.to(DEVICE)).cpu()
        assert cpu.shape == gpu.shape and cpu.shape[-2] == settings.get("n_mels", 128)
        if settings.get("log", True):
            assert torch.allclose(gpu, cpu, atol=1e-2), (gpu - cpu).abs().max()  # decibels
        else:
            assert torch.allclose(gpu, cpu, rtol=1e-3, atol=1e-6 * cpu.abs().max().item())


def test_a_bf16_mixed_run_trains_and_scores_through_asd_train(tmp_path: Path) -> None:
    """``trainer=gpu`` (bf16-mixed) on DG-Mix without pre-training: mixup draws, the log-mel on
    the device, the test loop and the inlier models. Breaks it would catch (not tried on a GPU;
    the same test passed on the CPU in bf16-mixed): a tensor left on the CPU (device mismatch),
    bf16 weights where Lightning keeps fp32 master weights, overflow to NaN."""
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=6, n_test=2, seconds=2.0)
    run = tmp_path / "run"
    metrics = train(compose_train([
        "experiment=dgmix_scratch", f"data.root={root}", "data.machine_types=[fan]", f"data.cache_dir={tmp_path / 'c'}",
        "data.num_workers=0", "data.progress=false", "logger=csv", "trainer=gpu", "trainer.max_epochs=2",
        "data.batch_size=8", "data.features.n_mels=32", "data.train_crop.frames=32", "data.test_segments.frames=32",
        "data.test_segments.hop=16", "callbacks.inlier.plots=false", "+trainer.enable_progress_bar=false"], run))
    assert np.isfinite(metrics["test/official_score"]) and np.isfinite(metrics["train/loss"])
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    weights = [v for k, v in state.items() if v.is_floating_point()]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights)
