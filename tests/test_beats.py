"""BEATs from official checkpoint files: the iter3 architecture's parameter names and shapes, the
official file format, and the forward pass against an independent implementation (the ESPnet
BeatsEncoder as vendored by the `openbeats` package, a test-only dependency)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from asd_lightning.models.components.encoders.beats import BEATs, BEATsBackbone, ITER3
from asd_lightning.models.components.encoders.fbank import KaldiFbank
from asd_lightning.models.components.encoders.pretrained import PretrainedEncoder
from asd_lightning.models.components.encoders.weights import MissingWeightsError

TINY = dict(ITER3, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
            embed_dim=24, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64, encoder_layerdrop=0.0)


def reference(cfg: dict, **settings):
    beats_encoder = pytest.importorskip("openbeats.beats_encoder")
    return beats_encoder.BeatsEncoder(input_size=0, beats_config=cfg, is_pretraining=False, **settings)


def random_tiny() -> BEATs:
    torch.manual_seed(0)
    model = BEATs(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # every weight, biases and gates included, away from its initial value
    return model


def test_an_iter3_state_dict_loads_strictly(monkeypatch) -> None:
    """The iter3 architecture (12 blocks of 768, 320 relative-position buckets shared by all
    blocks, gated, deep norm) has the official parameter names and shapes: the independent
    implementation's state dict (which loads the official files) loads with strict=True."""
    for name in ("normal_", "uniform_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "constant_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)  # shapes only: skip 90 M draws
    official = {k: v for k, v in reference(ITER3).state_dict().items() if "_pad" not in k}  # its own extras
    with torch.device("meta"):
        mine = BEATs(ITER3)
    assert mine.load_state_dict(official, strict=True, assign=True) is not None
    shapes = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
    assert shapes["patch_embedding.weight"] == (512, 1, 16, 16) and shapes["post_extract_proj.weight"] == (768, 512)
    assert shapes["encoder.pos_conv.0.weight_g"] == (1, 1, 128) and shapes["encoder.pos_conv.0.weight_v"] == (768, 48, 128)
    assert shapes["encoder.layers.11.self_attn.relative_attention_bias.weight"] == (320, 12)
    assert shapes["encoder.layers.0.self_attn.grep_a"] == (1, 12, 1, 1) and "predictor.weight" not in shapes
    assert sum(v.numel() for v in mine.parameters()) == pytest.approx(90e6, rel=0.02)  # BEATs: 90 M


def test_forward_matches_the_independent_implementation() -> None:
    """Same random weights, same waveforms: the final hidden states agree to float tolerance."""
    model = random_tiny()
    other = reference(TINY).eval()
    info = other.load_state_dict(model.state_dict(), strict=False)
    assert not info.unexpected_keys and all("_pad" in k for k in info.missing_keys)
    torch.manual_seed(1)
    wave = 0.1 * torch.randn(2, 32000)
    with torch.no_grad():
        ours = model(KaldiFbank()(wave))
        theirs = other(wave, torch.tensor([32000, 32000]), waveform_input=True)[0]
    assert ours.shape == theirs.shape == (2, 96, 32)  # 198 frames → 12 x 8 patches
    assert torch.allclose(ours, theirs, atol=1e-5)
    first = reference(TINY, max_layer=1).eval()  # its layer_results[1]: after the first block, as our layer=1
    first.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.allclose(model(KaldiFbank()(wave), layer=1),
                              first(wave, torch.tensor([32000, 32000]), waveform_input=True)[0], atol=1e-5)
        assert not torch.allclose(model(KaldiFbank()(wave), layer=1), ours, atol=1e-3)


def test_official_file_format_round_trips_into_the_encoder(tmp_path: Path) -> None:
    model = random_tiny()
    path = tmp_path / "BEATs_tiny.pt"
    torch.save({"cfg": TINY, "model": model.state_dict()}, path)
    encoder = PretrainedEncoder(functools.partial(BEATsBackbone), checkpoint=str(path), finetune="frozen").eval()
    wave = 0.1 * torch.randn(3, 16000)
    with torch.no_grad():
        expected = model(KaldiFbank()(wave)).mean(dim=1)
        assert torch.allclose(encoder(wave[:, None, None]), expected, atol=1e-6)
        assert encoder.backbone(encoder.backbone.inputs(wave), layer=1).shape == (3, 48, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the filterbank stays float32
        assert torch.allclose(encoder(wave[:, None, None]).float(), expected, atol=0.1)
    lora = PretrainedEncoder(functools.partial(BEATsBackbone), checkpoint=str(path), finetune="lora",
                             lora={"rank": 2}, embedding_dim=4)
    assert lora.trainable_parameters() == 2 * 2 * (2 * 32 + 32 * 2) + 32 * 4
    bad = tmp_path / "other.pt"
    torch.save({"cfg": dict(TINY, encoder_layers=3), "model": model.state_dict()}, bad)
    with pytest.raises(ValueError, match="do not fit the BEATs architecture"):
        BEATsBackbone(str(bad))
    with pytest.raises(MissingWeightsError, match=r"set model\.encoder\.checkpoint=<path of the \.pt file>"):
        BEATsBackbone(str(tmp_path / "BEATs_iter3.pt"))
