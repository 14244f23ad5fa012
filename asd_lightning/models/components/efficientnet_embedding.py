"""EfficientNet-B0 (timm) with the two-BCE paper's neck: a 128-d embedding of log-mel crops."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

PAPER_WEIGHTS = "ns_jft_in1k"  # Noisy Student (the paper's ref. [29]): timm's tf_efficientnet_b0.ns_jft_in1k


def local_pretrained_weights(model_name: str, tag: str, checkpoint_path: str | None = None) -> Path:
    """The file of ``<model_name>.<tag>`` weights on this machine: ``checkpoint_path``, else the
    Hugging Face hub cache or torch hub's checkpoint folder as timm fills them. Nothing is
    downloaded; without a local copy this says how to provide one."""
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"encoder checkpoint {path} does not exist (model.encoder.checkpoint_path)")
        return path
    name = f"{model_name}.{tag}"
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights named {name} (model.encoder.model_name / pretrained_tag)")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(cached, str):
                return Path(cached)
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if cached.is_file():
            return cached
    raise FileNotFoundError(
        f"no local copy of the {name} weights, and nothing is downloaded at run time. Either pass "
        f"model.encoder.checkpoint_path=<file> (a timm state dict, .safetensors or .pth), or fill the cache "
        f"once on a machine with internet: python -c \"import timm; timm.create_model('{name}', pretrained=True)\" "
        f"and copy its Hugging Face cache (~/.cache/huggingface, or $HF_HOME) to this machine")


class EfficientNetEmbedding(nn.Module):
    """timm EfficientNet-B0, global average pooling, then Dropout → Linear → BatchNorm → PReLU
    → Linear (Kuroyanagi et al. 2022, sec. IV.A, and the authors' code).

    Weights start random unless ``pretrained`` (the paper's Noisy Student ImageNet weights,
    ``pretrained_tag``) or ``checkpoint_path`` (any local timm checkpoint) is given; they are
    read from local files only (:func:`local_pretrained_weights`), and timm adapts the first
    convolution to ``in_channels``. A one-channel log-mel is repeated when ``in_channels`` is 3.
    """

    def __init__(self, model_name: str = "tf_efficientnet_b0", in_channels: int = 1, embedding_dim: int = 128,
                 dropout: float = 0.3, pretrained: bool = False, pretrained_tag: str = PAPER_WEIGHTS,
                 checkpoint_path: str | None = None) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        kwargs = dict(in_chans=in_channels, num_classes=0, global_pool="avg")
        if pretrained or checkpoint_path:
            path = local_pretrained_weights(model_name, pretrained_tag, checkpoint_path)
            name = model_name if checkpoint_path else f"{model_name}.{pretrained_tag}"
            self.backbone = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                              **kwargs)
        else:
            self.backbone = timm.create_model(model_name, pretrained=False, **kwargs)
        self.in_channels = in_channels
        width = self.backbone.num_features
        self.neck = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, embedding_dim), nn.BatchNorm1d(embedding_dim),
                                  nn.PReLU(), nn.Linear(embedding_dim, embedding_dim))
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, n_mels, frames]`` → ``[N, embedding_dim]``."""
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, -1, -1)
        return self.neck(self.backbone(x))
