"""Official DCASE 2022 MobileNetV2 baseline: score formula, classes from the data, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from asd_lightning.models.section_id_baseline import SectionIDBaseline, section_anomaly_scores
from asd_lightning.train import train
from conftest import make_2022
from test_train import compose_train, local_copy


def test_log_odds_of_the_true_section() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # softmax: (1/4, 3/4)
    scores = section_anomaly_scores(logits, torch.tensor([1, 0]))
    # p = 3/4 → log(1/4 / 3/4) = -log 3; p = 1/4 → +log 3
    assert scores.tolist() == pytest.approx([-math.log(3.0), math.log(3.0)], abs=1e-6)
    extreme = section_anomaly_scores(torch.tensor([[0.0, 200.0]]), torch.tensor([0]), eps=1e-7)
    assert torch.isfinite(extreme).all() and extreme.item() == pytest.approx(math.log((1 - 1e-7) / 1e-7), rel=1e-3)


def test_clip_score_is_the_mean_over_windows() -> None:
    model = SectionIDBaseline(optimizer=torch.optim.Adam, num_classes=3).eval()
    features = torch.randn(2, 4, 1, 128, 64)
    section = torch.tensor([0, 2])
    with torch.no_grad():
        per_window = model.segment_scores(features, section)
        clip = model.clip_scores({"features": features, "section": section})
        logits = model.net(features[1, 2:3])  # clip 1, window 2 by hand
    assert per_window.shape == (2, 4)
    assert clip.tolist() == pytest.approx(per_window.mean(dim=1).tolist(), rel=1e-6)
    p = logits.softmax(-1)[0, 2]
    assert per_window[1, 2].item() == pytest.approx(math.log((1 - p.item()) / p.item()), rel=1e-4)
    assert model.embed(features[0]).shape == (4, 1280)
    # the test step: own scores, or (inlier callback) the window embeddings, computed once
    batch = {"features": features, "section": section, "clip_id": torch.tensor([7, 8])}
    with torch.no_grad():
        assert model.test_step(batch, 0)["score"].tolist() == pytest.approx(clip.tolist(), rel=1e-6)
        model.score_by_embeddings = True
        out = model.test_step(batch, 0)
    assert "score" not in out and out["segment_embeddings"].shape == (2, 4, 1280)
    assert torch.allclose(out["segment_embeddings"][1], model.embed(features[1]), atol=1e-5)


def test_sections_from_the_data_and_checkpoint_reload(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan", "valve"), sections=(0, 1), n_train=6, n_test=2,
                     seconds=2.5, eval_section=3)
    cfg = compose_train(["experiment=mobilenetv2_baseline", "data.batch_size=8", "trainer.max_epochs=1",
                         *local_copy(root, tmp_path)], tmp_path / "run")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/official_score"] <= 1.0
    # 2 machine types x sections 0, 1, 3 → 6 classes, stored so the checkpoint loads alone
    model = SectionIDBaseline.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert model.hparams.num_classes == 6 and model.net.classifier[-1].out_features == 6
    with pytest.raises(ValueError, match="no optimizer"):  # loaded to score, not to train
        model.configure_optimizers()
    # testing it on data with other section classes is a clear error, not a size mismatch
    other = SectionIDBaseline(num_classes=4)
    with pytest.raises(ValueError, match="classifies 6 classes but the data has 4"):
        other.on_load_checkpoint(torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False))
