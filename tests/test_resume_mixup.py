"""Exact resume where it is hardest: methods that draw mixup coefficients and partners from
the global RNG every step (``dgmix_scratch``: section-ID fine-tuning with mixup;
``two_bce_wo_inlier``: two-BCE's 1:1 outlier batches, mixup on the waveforms), loading with two
worker processes (``data.num_workers=2``) and random crop positions. A run stopped by SIGTERM
mid-epoch and resumed from ``last.ckpt`` (``ckpt_path=last``, the same command) ends with the
same weights, validation losses and scores, to the bit, as the uninterrupted run. The AE baseline's resume (no RNG draws
in the step, in-process loading) is checked in ``test_reliability``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from asd_lightning.train import train
from asd_lightning.utils.resume import EXIT_INTERRUPTED
from conftest import make_2022
from test_train import compose_train


def final_state(run: Path) -> tuple[dict, pd.DataFrame, bytes]:
    """Weights of ``last.ckpt``, the per-epoch validation loss logged last and the clip scores."""
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    log = pd.concat([pd.read_csv(f) for f in sorted(run.rglob("metrics.csv"))])  # a resumed run: a new version
    val = log.dropna(subset=["val/loss"])[["epoch", "val/loss"]].drop_duplicates("epoch", keep="last")
    return state, val, (run / "submission" / "clip_scores.csv").read_bytes()


TINY = {  # method → its tiny settings
    "dgmix_scratch": ["data.batch_size=4", "data.features.n_mels=32", "data.train_crop.frames=32",
                      "data.train_crop.per_clip=2", "data.test_segments.frames=32", "data.test_segments.hop=16",
                      "callbacks.inlier.plots=false", "callbacks.inlier.bundle_dir=null"],
    "two_bce_wo_inlier": ["data.batch_size=4", "data.features.n_mels=32", "data.features.n_fft=512",
                          "data.features.hop_length=256", "data.train_crop.seconds=0.5",
                          "data.test_segments.seconds=0.5", "data.test_segments.num=3", "protocol=dcase2022",
                          "model.encoder.model_name=efficientnet_b0", "model.encoder.embedding_dim=16"],
}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(TINY))
def test_a_mixup_method_with_two_loader_workers_resumes_exactly(experiment: str, tmp_path: Path) -> None:
    """Breaks caught (each tried): the checkpoint without the RNG states (the resumed epoch draws other mixup
    coefficients and partners), crops drawn from the workers' own RNG (other crops after the
    workers restart), the resumed loader starting at epoch 0's plan (two-BCE: also epoch 0's
    stretch of the outlier stream). The last one was a real bug for every method with an LR
    schedule (two-BCE's OneCycleLR): sizing it built the training loader before the checkpoint's
    epoch was restored, so the resumed epoch trained on epoch 0's batches
    (``ASDMethod._rebuild_train_loader_after_restore`` fixes it)."""
    root = make_2022(tmp_path / "data", machines=("fan", "valve"), sections=(0, 1), n_train=6, n_test=1, seconds=2.0)
    command = [f"experiment={experiment}", f"data.root={root}", "data.machine_types=[fan]",
               f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=2", "data.progress=false", "logger=csv",
               "trainer.accelerator=cpu", "trainer.max_epochs=3", "data.val_fraction=0.2", *TINY[experiment],
               "+trainer.enable_progress_bar=false", "ckpt_path=last"]
    train(compose_train(command, tmp_path / "reference"))

    stop = ["+callbacks.stop._target_=pause_callback.TerminateAt", "+callbacks.stop.epoch=1", "+callbacks.stop.batch=1"]
    with pytest.raises(SystemExit) as stopped:
        train(compose_train(command + stop, tmp_path / "run"))
    assert stopped.value.code == EXIT_INTERRUPTED
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    train(compose_train(command, tmp_path / "run"))  # the same command resumes

    reference, resumed = final_state(tmp_path / "reference"), final_state(tmp_path / "run")
    assert reference[0].keys() == resumed[0].keys()
    assert all(torch.equal(reference[0][k], resumed[0][k]) for k in reference[0])
    assert len(reference[1]) == 3 and reference[1].reset_index(drop=True).equals(resumed[1].reset_index(drop=True))
    assert reference[2] == resumed[2]
