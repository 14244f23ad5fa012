"""The margin-loss recipe: two-branch encoder, MarginClassifier, experiments end to end."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch import nn

from asd_lightning.deploy.cli import main as score_main
from asd_lightning.features.log_mel import LogMel
from asd_lightning.features.waveform import Waveform, build_frontend
from asd_lightning.metrics import read_submission
from asd_lightning.models.components.adaproj import AdaProj
from asd_lightning.models.components.sub_cluster_adacos import SubClusterAdaCos
from asd_lightning.models.components.two_branch_encoder import TwoBranchEncoder, fit_length
from asd_lightning.models.margin_classifier import MarginClassifier
from asd_lightning.train import train
from conftest import make_2023
from test_train import compose_train, local_copy


def small_encoder(samples: int = 8000) -> TwoBranchEncoder:
    return TwoBranchEncoder(samples, LogMel(n_fft=512, hop_length=256, n_mels=32), branch_dim=16)


def test_waveform_front_end_and_length_fitting() -> None:
    wave = torch.arange(10.0).view(2, 5)
    assert torch.equal(Waveform()(wave), wave[:, None, :])
    assert isinstance(build_frontend(16000, {"kind": "waveform"}), Waveform)
    assert isinstance(build_frontend(16000, {"n_mels": 32}), LogMel)
    with pytest.raises(ValueError, match="kind must be log_mel or waveform"):
        build_frontend(16000, {"kind": "cqt"})
    with pytest.raises(ValueError, match="takes no other settings"):
        build_frontend(16000, {"kind": "waveform", "n_mels": 32})
    assert fit_length(torch.tensor([[1.0, 2.0, 3.0]]), 7).tolist() == [[1, 2, 3, 1, 2, 3, 1]]
    assert fit_length(torch.tensor([[1.0, 2.0, 3.0]]), 2).tolist() == [[1, 2]]


def test_two_branch_encoder_shapes_no_biases_and_both_branches_used() -> None:
    torch.manual_seed(0)
    encoder = small_encoder().eval()
    x = torch.randn(3, 1, 1, 8000)
    out = encoder(x)
    assert out.shape == (3, 32) and encoder.embedding_dim == 32
    assert encoder.spectrum_branch.bins == 4000
    layers = [m for m in encoder.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    assert layers and all(m.bias is None for m in layers)
    # the first 16 dimensions come from the spectrogram, the last 16 from the spectrum
    with torch.no_grad():
        spectrum_only = encoder.spectrum_branch(x.view(3, -1))
        assert torch.allclose(out[:, 16:], spectrum_only, atol=1e-5)
        # a shorter clip is repeated to the encoder's length
        assert torch.allclose(encoder(x[..., :3000]), encoder(fit_length(x[:, 0, 0, :3000], 8000)[:, None, None]),
                              atol=1e-5)


def test_mixup_mixes_waveforms_and_labels_alike() -> None:
    torch.manual_seed(0)
    loss = lambda embedding_dim, num_classes: SubClusterAdaCos(embedding_dim, num_classes, n_subclusters=2)
    model = MarginClassifier(small_encoder(), loss, num_classes=3, mixup_prob=1.0)
    n = 6
    a = torch.arange(1.0, n + 1)
    features = torch.stack([a, a ** 2], dim=1).view(n, 1, 1, 2)  # (a, a²): a mix names its partner and λ
    y = model.labels({"class": torch.tensor([0, 1, 2, 0, 1, 2])})
    mixed, y_mixed = model.mixed(features, y)
    for i in range(n):
        ma, mb = mixed[i, 0, 0].tolist()
        fits = [(p, 1.0 if p == i else (ma - a[p].item()) / (a[i].item() - a[p].item())) for p in range(n)]
        fits = [(p, lam) for p, lam in fits if -1e-6 <= lam <= 1 + 1e-6
                and abs(lam * a[i].item() ** 2 + (1 - lam) * a[p].item() ** 2 - mb) < 1e-3]
        assert fits, f"sample {i} is not a mix of two samples"
        p, lam = fits[0]
        # the authors' label rule: the elementwise maximum of the weighted one-hots (a sample
        # drawn as its own partner is unchanged, its label max(λ, 1 − λ) of its class)
        if abs(lam - 1.0) < 1e-6:  # unchanged: its own partner
            assert 0.5 <= y_mixed[i].max().item() <= 1.0 and y_mixed[i].argmax() == y[i].argmax()
        else:
            assert torch.allclose(y_mixed[i], torch.maximum(lam * y[i], (1 - lam) * y[p]), atol=1e-4)
    assert not torch.equal(mixed, features)
    off = MarginClassifier(small_encoder(), loss, num_classes=3, mixup_prob=0.0)
    assert off.mixed(features, y)[0] is features
    with pytest.raises(ValueError, match="no class of data.labels"):
        model.labels({"class": torch.tensor([0, -1])})
    with pytest.raises(ValueError, match="at least 2 classes"):
        MarginClassifier(small_encoder(), loss, num_classes=1)


@pytest.mark.parametrize("loss", [lambda d, c: SubClusterAdaCos(d, c, n_subclusters=4), lambda d, c: AdaProj(d, c, 4)])
def test_margin_classifier_learns_three_tones(loss) -> None:
    """Trained by hand on three tones (one class each), with mixup: the classes are told apart."""
    torch.manual_seed(0)
    t = torch.arange(4000) / 16000
    clips = {c: torch.stack([torch.sin(2 * torch.pi * (300 + 400 * c) * t + phase) + 0.1 * torch.randn(4000)
                             for phase in torch.rand(8) * 6]) for c in range(3)}
    x = torch.cat(list(clips.values()))[:, None, None]
    label = torch.arange(3).repeat_interleave(8)
    encoder = TwoBranchEncoder(4000, LogMel(n_fft=512, hop_length=256, n_mels=32), branch_dim=8,
                               spectrogram_channels=(4, 8, 8, 16), spectrum_channels=16)
    model = MarginClassifier(encoder, lambda embedding_dim, num_classes: loss(embedding_dim, num_classes),
                             num_classes=3, mixup_prob=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(40):
        optimizer.zero_grad()
        features, y = model.mixed(x, model.labels({"class": label}))
        model.margin(model.embed(features), y).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model.margin.log_probs(model.margin.cosines(model.embed(x))).argmax(dim=1)
    assert (predicted == label).all()
    assert float(model.margin.scale) > 0


TINY = ["data.train_crop.seconds=0.5", "model.encoder.branch_dim=16", "model.encoder.spectrum_channels=16",
        "model.encoder.spectrogram_channels=[4,8,8,16]", "model.encoder.spectrogram.n_fft=512",
        "model.encoder.spectrogram.hop_length=256", "model.encoder.spectrogram.n_mels=32", "data.batch_size=4",
        "data.year=2023", "callbacks.inlier.plots=false"]


@pytest.mark.parametrize("experiment", ["sc_adacos", "adaproj"])
def test_margin_experiment_learns_attribute_classes_end_to_end(experiment: str, tmp_path: Path) -> None:
    """A tiny 2023-layout set (one section, attribute values X and Y as two tones): the recipe
    trains on the two attribute classes (the loss falls, the training clips are told apart),
    scores with per-domain cosine 1-NN, writes a bundle that scores as the callback did.

    20 full-batch steps at lr 0.01 without mixup, so that 20 epochs of 13 clips learn. Catches
    training that does not reach the encoder (a zero gradient to the embeddings) and labels that
    do not reach the loss (shuffled). Seeds 0-4 and 12345, both losses (12 runs): the mean loss
    of the last 5 epochs is 0.44-0.70 of the first 5's; 12 or 13 of the 13 training clips are
    classified right. (The detection figures of so short a training are no measure: the
    batch-norm running statistics lag the weights, and the official score on these 8 test clips
    ranged 0.0-1.0 over those seeds.)"""
    root = make_2023(tmp_path / "data", n_train=6, seconds=1.0)
    small_subspace = ["model.loss.subspace_dim=4"] if experiment == "adaproj" else []
    cfg = compose_train([f"experiment={experiment}", "trainer.max_epochs=20", "data.labels=attribute", *TINY, *small_subspace,
                         *local_copy(root, tmp_path, machines="fan"), "data.ground_truth=null", "data.batch_size=13",
                         "model.optimizer.lr=0.01", "model.mixup_prob=0"],
                        tmp_path / "run")
    assert cfg.callbacks.inlier.per_domain and cfg.callbacks.inlier.model.metric == "cosine"
    metrics = train(cfg)
    assert 0.0 <= metrics["test/official_score"] <= 1.0
    losses = pd.read_csv(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")["train/loss"].dropna().to_numpy()
    assert len(losses) == 20 and losses[-5:].mean() < 0.8 * losses[:5].mean()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    loss = {"sc_adacos": SubClusterAdaCos, "adaproj": functools.partial(AdaProj, subspace_dim=4)}[experiment]
    encoder = TwoBranchEncoder(8000, LogMel(n_fft=512, hop_length=256, n_mels=32), 16,
                               spectrogram_channels=(4, 8, 8, 16), spectrum_channels=16)
    model = MarginClassifier.load_from_checkpoint(ckpt, encoder=encoder, loss=loss)
    # the classes are the two attribute values, stored with the weights
    assert model.hparams.num_classes == 2 and isinstance(model.margin, getattr(loss, "func", loss)) and model.class_sections.tolist() == [0, 0]
    # the training clips' classes, told apart with the batch-norm statistics of those clips
    files = sorted((root / "dev_data" / "fan" / "train").glob("*.wav"))
    waves = torch.stack([torch.from_numpy(sf.read(f, dtype="float32")[0]) for f in files])[:, None, None]
    value = torch.tensor([int(f.stem.endswith("_Y")) for f in files])  # classes in the order of the values
    with torch.no_grad():
        predicted = model.train().margin.log_probs(model.margin.cosines(model.embed(waves))).argmax(dim=1)
    assert (predicted == value).sum() >= 12, (predicted.tolist(), value.tolist())
    # the bundle scores recordings as the callback did
    scores = read_submission(tmp_path / "run" / "submission", 2023)
    out = tmp_path / "scores.json"
    assert score_main(["--bundle", str(tmp_path / "run" / "bundle" / "fan"), str(root / "dev_data" / "fan" / "test"),
                       "--out", str(out)]) == 0
    bundled = pd.read_json(out).assign(file=lambda t: t["file"].map(lambda f: Path(f).name))
    both = scores.merge(bundled, on="file", suffixes=("", "_bundle"))
    assert len(both) == 8 and np.allclose(both["score_bundle"], both["score"], rtol=1e-4, atol=1e-6)
    summary = json.loads((tmp_path / "run" / "bundle" / "fan" / "bundle.json").read_text())
    assert summary["inlier"]["0"]["domains"] == ["source", "target"]


def test_the_embedding_has_no_bias_a_zero_input_maps_to_zero() -> None:
    """No bias anywhere on the path to the embedding, batch-norm shifts included (eval mode, fresh
    statistics): a constant-zero spectrogram feature map and an all-zero waveform give a zero
    spectrum-branch and spectrogram-head output."""
    from asd_lightning.models.components.two_branch_encoder import SpectrogramBranch, SpectrumBranch

    head = SpectrogramBranch(16, dim=8, channels=(4, 4, 4, 4)).head.eval()
    for p in head.parameters():
        torch.nn.init.normal_(p)
    assert torch.equal(head(torch.zeros(3, head[1].in_features)), torch.zeros(3, 8))
    spectrum = SpectrumBranch(4096, dim=8, channels=8, hidden=8).eval()
    assert torch.equal(spectrum(torch.zeros(2, 4096)), torch.zeros(2, 8))
