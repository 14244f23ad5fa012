"""BEATs (Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", ICML 2023), written
from the paper and the published architecture, with the official checkpoints' parameter names, so
that ``BEATs_iter3.pt`` and its kin (a ``torch.load`` dict ``{"cfg": ..., "model": state_dict}``)
load with ``strict=True``.

Input: Kaldi 128-band filterbank (25 ms / 10 ms, Povey window) of the 16 kHz waveform in 16-bit
units, ``(x − 15.41663) / (2 · 6.55582)``. A 16×16 convolution cuts it into patches (512-d,
layer norm, projected to 768), then a post-norm ("deep norm": residual × (2L)^¼) Transformer with
a convolutional position embedding and a gated relative position bias (WavLM's: 320 buckets,
shared by all layers, scaled per layer and query by two sigmoid gates).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from asd_lightning.models.components.encoders.fbank import KaldiFbank
from asd_lightning.models.components.encoders.weights import SETTING, resolve_weights
from asd_lightning.utils.errors import UserError

HINT = ("the official BEATs checkpoint, e.g. BEATs_iter3.pt or BEATs_iter3_plus_AS2M.pt from the links in "
        "https://github.com/microsoft/unilm/tree/master/beats")

# The architecture settings of a BEATs checkpoint's cfg, with the official defaults.
DEFAULTS: dict[str, Any] = dict(
    input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu", layer_wise_gradient_decay_ratio=1.0,
    layer_norm_first=False, deep_norm=False, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.0, dropout_input=0.0, conv_pos=128, conv_pos_groups=16, relative_position_embedding=False,
    num_buckets=320, max_distance=1280, gru_rel_pos=False, finetuned_model=False, predictor_dropout=0.1,
    predictor_class=527)
# BEATs_iter3.pt's architecture (its parameter names and shapes; each file's own cfg sets the
# dropout rates, the layer drop and the gradient decay, which the ones here only stand in for)
ITER3 = dict(DEFAULTS, layer_wise_gradient_decay_ratio=0.6, deep_norm=True, relative_position_embedding=True,
             max_distance=800, gru_rel_pos=True, encoder_layerdrop=0.05, dropout=0.0, attention_dropout=0.0)


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient × ``scale`` backward (the layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class WeightNormConv1d(nn.Conv1d):
    """A grouped convolution under weight normalisation over dimension 2 (``weight_g``, ``weight_v``),
    the official ``nn.utils.weight_norm(conv, dim=2)`` parameters."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weight = self.weight.detach()
        del self.weight
        self.weight_v = nn.Parameter(weight.clone())
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(weight, dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        return self._conv_forward(x, weight, self.bias)


class SamePad(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


def relative_buckets(length: int, num_buckets: int, max_distance: int, device) -> torch.Tensor:
    """``[L, L]`` bucket of each key−query offset: exact for |offset| < buckets/4, logarithmic up to
    ``max_distance``, one half of the buckets per sign."""
    offset = torch.arange(length, device=device)[None, :] - torch.arange(length, device=device)[:, None]
    half = num_buckets // 2
    buckets = (offset > 0).long() * half
    offset = offset.abs()
    exact = half // 2
    large = exact + (torch.log(offset.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(offset < exact, offset, large)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, cfg: dict) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.gated = bool(cfg["gru_rel_pos"])
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        self.relative_attention_bias: nn.Embedding | None = None  # shared; set by the encoder

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, length, _ = x.shape
        split = lambda t: t.view(n, length, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        mask = None
        if bias is not None:  # [H, L, L]
            mask = bias[None]
            if self.gated:
                gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(n, self.heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, -1))


class Block(nn.Module):
    """Post-norm (or pre-norm with ``layer_norm_first``) self-attention and feed-forward block."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        self.self_attn = Attention(dim, cfg["encoder_attention_heads"], cfg["attention_dropout"], cfg)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg["encoder_ffn_embed_dim"])
        self.fc2 = nn.Linear(cfg["encoder_ffn_embed_dim"], dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        if cfg["activation_fn"] != "gelu":
            raise UserError(f"BEATs checkpoint: activation_fn {cfg['activation_fn']!r} is not supported (gelu is)")
        self.norm_first = bool(cfg["layer_norm_first"])
        self.alpha = math.pow(2 * cfg["encoder_layers"], 0.25) if cfg["deep_norm"] else 1.0
        self.dropout, self.activation_dropout = cfg["dropout"], cfg["activation_dropout"]

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(F.gelu(self.fc1(x).float()).type_as(x), self.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:
            x = x + F.dropout(self.self_attn(self.self_attn_layer_norm(x), bias), self.dropout, self.training)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.alpha + F.dropout(self.self_attn(x, bias), self.dropout, self.training))
        return self.final_layer_norm(x * self.alpha + self._ffn(x))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        conv = WeightNormConv1d(dim, dim, kernel_size=cfg["conv_pos"], padding=cfg["conv_pos"] // 2,
                                groups=cfg["conv_pos_groups"])
        self.pos_conv = nn.Sequential(conv, SamePad(cfg["conv_pos"]), nn.GELU())
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["encoder_layers"]))
        self.layer_norm = nn.LayerNorm(dim)
        self.cfg = cfg
        if cfg["relative_position_embedding"]:
            shared = nn.Embedding(cfg["num_buckets"], cfg["encoder_attention_heads"])
            for layer in self.layers:
                layer.self_attn.relative_attention_bias = shared
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """``[N, T, D]`` patch embeddings → the hidden states after block ``layer`` (0: before
        the first; None: the output)."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.cfg["layer_norm_first"]:
            x = self.layer_norm(x)
        x = F.dropout(x, self.cfg["dropout"], self.training)
        bias = None
        shared = self.layers[0].self_attn.relative_attention_bias
        if shared is not None:
            buckets = relative_buckets(x.shape[1], self.cfg["num_buckets"], self.cfg["max_distance"], x.device)
            bias = shared(buckets).permute(2, 0, 1)  # [H, L, L]
        if layer == 0:
            return x
        for i, block in enumerate(self.layers):
            if self.cfg["layer_wise_gradient_decay_ratio"] != 1.0 and torch.is_grad_enabled():
                x = _GradScale.apply(x, self.cfg["layer_wise_gradient_decay_ratio"])
            if not self.training or torch.rand(()) > self.cfg["encoder_layerdrop"]:
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    x = checkpoint(block, x, bias, use_reentrant=False)
                else:
                    x = block(x, bias)
            if layer is not None and i + 1 == layer % (len(self.layers) + 1):
                return x
        return self.layer_norm(x) if self.cfg["layer_norm_first"] else x


class BEATs(nn.Module):
    """The BEATs encoder of a checkpoint's ``cfg`` (unknown keys ignored, missing ones the official
    defaults); ``forward(fbank [N, frames, 128], layer)`` → ``[N, patches, D]``."""

    def __init__(self, cfg: dict | None = None) -> None:
        super().__init__()
        self.cfg = cfg = {**DEFAULTS, **{k: v for k, v in (cfg or {}).items() if k in DEFAULTS}}
        size = cfg["input_patch_size"]
        self.patch_embedding = nn.Conv2d(1, cfg["embed_dim"], kernel_size=size, stride=size, bias=cfg["conv_bias"])
        self.layer_norm = nn.LayerNorm(cfg["embed_dim"])
        self.post_extract_proj = (nn.Linear(cfg["embed_dim"], cfg["encoder_embed_dim"])
                                  if cfg["embed_dim"] != cfg["encoder_embed_dim"] else None)
        self.encoder = TransformerEncoder(cfg)
        self.predictor = nn.Linear(cfg["encoder_embed_dim"], cfg["predictor_class"]) if cfg["finetuned_model"] else None

    def forward(self, fbank: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        x = self.patch_embedding(fbank[:, None])  # [N, 512, T/16, 128/16]
        x = self.layer_norm(x.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = F.dropout(x, self.cfg["dropout_input"], self.training)
        return self.encoder(x, layer)


def load_checkpoint(path) -> dict:
    """An official BEATs checkpoint file as ``{"cfg": dict, "model": state dict}``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "cfg" not in state or "model" not in state:
        raise UserError(f"{path} is not a BEATs checkpoint (a torch.load dict with 'cfg' and 'model'); "
                         f"set {SETTING}=<BEATs_iter3.pt or another official file>")
    cfg = state["cfg"]
    return {"cfg": dict(cfg if isinstance(cfg, dict) else vars(cfg)), "model": state["model"]}


class BEATsBackbone(nn.Module):
    """BEATs from an official checkpoint file, loaded strictly, with its input pipeline on the
    device (:class:`~.fbank.KaldiFbank`): the backbone interface of
    :class:`~.pretrained.PretrainedEncoder`."""

    spectrogram_input = True

    def __init__(self, checkpoint: str | None, sample_rate: int = 16000) -> None:
        super().__init__()
        if sample_rate != 16000:
            raise UserError(f"BEATs expects 16000 Hz audio, the data is decoded at {sample_rate} Hz "
                             "(set data.decode.sample_rate=16000 data.decode.resample=true)")
        path = resolve_weights(checkpoint, "file", SETTING, HINT)
        state = load_checkpoint(path)
        self.model = BEATs(state["cfg"])
        try:
            self.model.load_state_dict(state["model"], strict=True)
        except RuntimeError as error:
            raise UserError(f"{path}: its weights do not fit the BEATs architecture of its cfg: "
                             f"{str(error).splitlines()[1] if len(str(error).splitlines()) > 1 else error}") from None
        self.pretrained_source = str(path)
        self.fbank = KaldiFbank(sample_rate=16000, num_mel_bins=128, mean=15.41663, std=6.55582, scale=2.0 ** 15)
        self.hidden_size = int(self.model.cfg["encoder_embed_dim"])
        self.blocks = self.model.encoder.layers

    def inputs(self, wave: torch.Tensor) -> torch.Tensor:
        return self.fbank(wave)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.model.encoder.gradient_checkpointing = bool(enabled)

    def forward(self, inputs: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        return self.model(inputs, layer)
