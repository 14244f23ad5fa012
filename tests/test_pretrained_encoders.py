"""Pre-trained audio encoders: local weights only, the transformers path (a tiny random AST saved
with save_pretrained), LoRA / frozen / full fine-tuning, the training-free recipe, bundles."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from asd_lightning.deploy.cli import main as score_main  # noqa: E402
from asd_lightning.metrics import read_submission  # noqa: E402
from asd_lightning.models.components.encoders.hf_audio import HFAudioBackbone  # noqa: E402
from asd_lightning.models.components.encoders.pretrained import PretrainedEncoder  # noqa: E402
from asd_lightning.models.components.encoders.weights import MissingWeightsError  # noqa: E402
from asd_lightning.train import train  # noqa: E402
from conftest import make_2023  # noqa: E402
from test_train import compose_train, local_copy  # noqa: E402

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_mel_bins=32,
                max_length=48, patch_size=16, frequency_stride=16, time_stride=16)


@pytest.fixture(scope="module")
def ast_folder(tmp_path_factory) -> Path:
    """A tiny random AST and its feature extractor, saved as a user's local model folder."""
    folder = tmp_path_factory.mktemp("ast")
    torch.manual_seed(0)
    transformers.ASTModel(transformers.ASTConfig(**TINY_AST)).save_pretrained(folder)
    transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=48).save_pretrained(folder)
    return folder


def ast_encoder(folder: Path, **settings) -> PretrainedEncoder:
    return PretrainedEncoder(functools.partial(HFAudioBackbone, sample_rate=16000), checkpoint=None if folder is None else str(folder), **settings)


def test_features_on_the_device_match_the_folders_feature_extractor(ast_folder: Path, monkeypatch) -> None:
    """The AST filterbank computed on the device equals the extractor's own (transformers'
    reference) on the same waveforms; HF_HUB_OFFLINE=1 changes nothing."""
    torch.manual_seed(1)
    wave = 0.1 * torch.randn(2, 16000)
    extractor = transformers.ASTFeatureExtractor.from_pretrained(ast_folder)
    reference = extractor(list(wave.numpy()), sampling_rate=16000, return_tensors="pt")["input_values"]
    encoder = ast_encoder(ast_folder, finetune="frozen").eval()
    assert torch.allclose(encoder.backbone.inputs(wave), reference, atol=1e-5)
    online = encoder(wave[:, None, None])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = ast_encoder(ast_folder, finetune="frozen").eval()
    assert torch.equal(offline(wave[:, None, None]), online)


def test_missing_weights_name_the_override(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match=r"set model\.encoder\.checkpoint=<folder saved with save_pretrained>"):
        ast_encoder(tmp_path / "nowhere")
    with pytest.raises(MissingWeightsError, match=r"no pre-trained weights given.*model\.encoder\.checkpoint="):
        ast_encoder(None)  # type: ignore[arg-type]
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="has no config.json"):
        ast_encoder(tmp_path / "empty")


def test_a_repo_id_already_in_the_local_cache_loads_offline(ast_folder: Path, tmp_path: Path, monkeypatch) -> None:
    """``model.encoder.checkpoint=<org>/<name>`` finds a filled Hugging Face cache, never the network."""
    import shutil

    import huggingface_hub

    snapshot = tmp_path / "hub" / "models--someone--tiny-ast" / "snapshots" / "abc123"
    shutil.copytree(ast_folder, snapshot)
    (tmp_path / "hub" / "models--someone--tiny-ast" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-ast" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = PretrainedEncoder(functools.partial(HFAudioBackbone), checkpoint="someone/tiny-ast", finetune="frozen")
    assert encoder.backbone.pretrained_source == str(snapshot)
    with pytest.raises(MissingWeightsError, match="nor in the local Hugging Face cache"):
        PretrainedEncoder(functools.partial(HFAudioBackbone), checkpoint="someone/not-cached")


def test_fine_tuning_modes_train_what_they_say(ast_folder: Path) -> None:
    """LoRA: adapters + head only; frozen: head only, backbone kept in eval mode; full with
    frozen_layers=1: the second block and the head; layer-wise rates by depth."""
    lora = ast_encoder(ast_folder, finetune="lora", embedding_dim=8, lora={"rank": 2, "alpha": 4})
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    adapters = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    # q and v of 2 blocks, each A [2, 32] and B [32, 2]; head 32 x 8
    assert adapters == 2 * 2 * (2 * 32 + 32 * 2) and lora.trainable_parameters() == adapters + 32 * 8
    assert all("lora_" in n or n == "head.weight" for n in names)
    frozen = ast_encoder(ast_folder, finetune="frozen", embedding_dim=8).train()
    assert frozen.trainable_parameters() == 32 * 8 and not frozen.backbone.training
    full = ast_encoder(ast_folder, finetune="full", frozen_layers=1, embedding_dim=8)
    assert {n.split(".")[3] for n, p in full.named_parameters() if p.requires_grad and n.startswith("backbone")} == {"1"}
    decayed = ast_encoder(ast_folder, finetune="full", layer_lr_decay=0.5, embedding_dim=8)
    rates = {len(g["params"]): g["lr"] for g in decayed.parameter_groups(1.0)}
    assert sorted({g["lr"] for g in decayed.parameter_groups(1.0)}) == [0.125, 0.25, 0.5, 1.0]
    assert rates[1] == 1.0  # the head alone at the full rate
    with pytest.raises(ValueError, match="set data/frontend=waveform"):
        frozen(torch.zeros(2, 1, 32, 100))  # a log-mel front end's output
    from asd_lightning.models.pretrained_knn import PretrainedKNN

    assert PretrainedKNN(ast_encoder(ast_folder, finetune="frozen")).training_free
    with pytest.raises(ValueError, match="PretrainedKNN trains nothing"):
        PretrainedKNN(lora)
    with pytest.raises(ValueError, match="target_modules=.*matches no linear layer"):
        ast_encoder(ast_folder, finetune="lora", lora={"target_modules": ["nothing_here"]})


def test_layer_wise_rates_reach_the_margin_classifiers_optimizer(ast_folder: Path) -> None:
    from asd_lightning.models.components.sub_cluster_adacos import SubClusterAdaCos
    from asd_lightning.models.margin_classifier import MarginClassifier

    encoder = ast_encoder(ast_folder, finetune="full", layer_lr_decay=0.5, embedding_dim=8)
    model = MarginClassifier(encoder, functools.partial(SubClusterAdaCos, n_subclusters=2), num_classes=3,
                             optimizer=functools.partial(torch.optim.AdamW, lr=0.01))
    groups = model.configure_optimizers().param_groups
    assert sorted({g["lr"] for g in groups}) == [0.00125, 0.0025, 0.005, 0.01]
    # the margin recipe's rule inside each rate: no weight decay on biases and norms
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01} and len(groups) > 4
    kernels = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(p.dim() > 1 for p in model.parameters() if id(p) in kernels)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_a_waveform_model_gets_its_extractors_normalisation(tmp_path: Path) -> None:
    """wav2vec 2.0 through AutoModel: the per-clip zero-mean unit-variance input of its extractor."""
    config = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=4,
                                         num_conv_pos_embedding_groups=2)
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path)
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    extractor.save_pretrained(tmp_path)
    wave = 0.1 * torch.randn(2, 4000) + 0.3
    reference = extractor(list(wave.numpy()), sampling_rate=16000, return_tensors="pt")["input_values"]
    encoder = ast_encoder(tmp_path, finetune="lora", layer=1).eval()
    assert torch.allclose(encoder.backbone.inputs(wave), reference, atol=1e-4)
    assert encoder(wave[:, None, None]).shape == (2, 16) and encoder.trainable_parameters() > 0


def test_a_bundle_that_needs_a_missing_package_says_which(tmp_path: Path, monkeypatch) -> None:
    """A bundle pickled with an encoder of a package that this machine lacks: asd-score's loader
    names the package and the extra to install."""
    import importlib
    import sys

    from asd_lightning.deploy.bundle import BUNDLE_FILE, ModelBundle

    (tmp_path / "gone_encoder_pkg.py").write_text("class Encoder:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("gone_encoder_pkg")
    (tmp_path / "bundle").mkdir()
    torch.save({"encoder": module.Encoder()}, tmp_path / "bundle" / BUNDLE_FILE)
    del sys.modules["gone_encoder_pkg"]
    (tmp_path / "gone_encoder_pkg.py").unlink()
    with pytest.raises(ModuleNotFoundError, match=r"needs the Python package 'gone_encoder_pkg'.*asd-lightning\[encoders\]"):
        ModelBundle.load(tmp_path / "bundle")


TINY_RUN = ["data.year=2023", "data.labels=attribute", "data.train_crop.seconds=1.0", "data.batch_size=4",
            "trainer.max_epochs=1", "callbacks.inlier.plots=false", "model/encoder=hf_audio", "model.encoder.embedding_dim=8",
            "model.encoder.spec_augment.freq_width=4", "model.encoder.spec_augment.time_width=4",
            "model.encoder.lora.rank=2", "model.encoder.lora.alpha=4", "data.ground_truth=null"]


def scored_by_bundle(run: Path, root: Path, tmp_path: Path) -> None:
    """The bundle scores the test clips as the run did (asd-score)."""
    scores = read_submission(run / "submission", 2023)
    out = tmp_path / f"{run.name}.json"
    assert score_main(["--bundle", str(run / "bundle" / "fan"), str(root / "dev_data" / "fan" / "test"), "--out", str(out)]) == 0
    bundled = pd.read_json(out).assign(file=lambda t: t["file"].map(lambda f: Path(f).name))
    both = scores.merge(bundled, on="file", suffixes=("", "_bundle"))
    assert len(both) == 8 and np.allclose(both["score_bundle"], both["score"], rtol=1e-4, atol=1e-6)
    assert (run / "submission" / "clip_scores.csv").is_file()


@pytest.mark.slow
def test_lora_and_training_free_recipes_end_to_end(ast_folder: Path, tmp_path: Path) -> None:
    """experiment=encoder_lora on a tiny random AST: only adapters and head change; then
    experiment=genrep trains nothing. Both write the official table, clip scores and bundles
    that asd-score scores with."""
    root = make_2023(tmp_path / "data", n_train=4, seconds=1.0)
    data = local_copy(root, tmp_path, machines="fan")
    before = ast_encoder(ast_folder, finetune="frozen").backbone.state_dict()
    cfg = compose_train(["experiment=encoder_lora", f"model.encoder.checkpoint={ast_folder}", *data, *TINY_RUN],
                        tmp_path / "lora")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/official_score"] <= 1.0
    scored_by_bundle(tmp_path / "lora", root, tmp_path)
    bundle = torch.load(tmp_path / "lora" / "bundle" / "fan" / "bundle.pt", weights_only=False)
    trained = bundle["encoder"].encoder
    after = {n.replace(".base_layer", ""): p for n, p in trained.backbone.state_dict().items() if "lora_" not in n}
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], before[n]) for n in before)  # the pre-trained weights themselves never move
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in trained.named_parameters())  # B starts at zero
    summary = json.loads((tmp_path / "lora" / "bundle" / "fan" / "bundle.json").read_text())
    assert summary["encoder_weights"]["held_in_bundle"] and summary["encoder_weights"]["source"] == str(ast_folder)

    cfg = compose_train(["experiment=genrep", f"model.encoder.checkpoint={ast_folder}", "model/encoder=hf_audio",
                         "data.year=2023", "data.train_crop.seconds=1.0", "callbacks.inlier.plots=false",
                         *data, "data.ground_truth=null"], tmp_path / "genrep")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/official_score"] <= 1.0 and not (tmp_path / "genrep" / "checkpoints").exists()
    scored_by_bundle(tmp_path / "genrep", root, tmp_path)


def test_a_missing_checkpoint_stops_the_run_before_training(tmp_path: Path) -> None:
    root = make_2023(tmp_path / "data", n_train=2, seconds=1.0)
    cfg = compose_train(["experiment=encoder_lora", f"model.encoder.checkpoint={tmp_path / 'BEATs_iter3.pt'}",
                         *local_copy(root, tmp_path, machines="fan"), "data.ground_truth=null"], tmp_path / "run")
    with pytest.raises(Exception, match=r"BEATs_iter3\.pt not found.*set model\.encoder\.checkpoint=<path of the \.pt file>"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
