"""A pre-trained audio encoder as a method's encoder: waveform crops in, pooled embeddings out.

``forward``: ``[N, 1, 1, samples]`` waveforms (``data/frontend=waveform``) → the backbone's input
features on the device (SpecAugment on filterbank inputs while training) → the hidden states of
``layer`` → their mean over time → an optional linear ``head`` (``embedding_dim``) → ``[N, D]``.

Fine-tuning, ``finetune``:

* ``frozen``: the backbone never trains (kept in eval mode: no dropout); only the head does;
* ``full``: every backbone weight trains, except the stem and the first ``frozen_layers`` blocks
  when that is > 0; ``layer_lr_decay`` γ < 1 gives block ``i`` of ``L`` the rate ``lr · γ^(L-i)``
  and the stem ``lr · γ^(L+1)`` (BEiT's layer-wise decay), the head ``lr``;
* ``lora``: LoRA adapters (``peft``; rank, alpha, dropout, target modules) in the backbone's
  ``target_modules``; only they and the head train.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from asd_lightning.utils.errors import UserError

FINETUNE = ("frozen", "full", "lora")


def add_lora(module: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             target_modules: list[str] | str = ("q_proj", "v_proj")) -> nn.Module:
    """LoRA adapters (``peft``) in every linear layer of ``module`` named by ``target_modules``
    (a list of name suffixes or a regular expression); freezes all but the adapters."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ImportError("LoRA needs peft, in the `encoders` extra: pip install 'asd-lightning[encoders]'") from error
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    none = ValueError(f"model.encoder.lora.target_modules={target_modules} matches no linear layer of "
                      f"{type(module).__name__}")
    try:
        module = inject_adapter_in_model(LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                                                    target_modules=targets), module)
    except ValueError as error:  # peft's NoMatchingPeftModuleError
        if "not found" in str(error):
            raise none from None
        raise
    for name, parameter in module.named_parameters():
        parameter.requires_grad_("lora_" in name)
    if not any(p.requires_grad for p in module.parameters()):
        raise none
    return module


class PretrainedEncoder(nn.Module):
    """A backbone (``beats.BEATsBackbone``, ``hf_audio.HFAudioBackbone``) read at ``layer``,
    mean-pooled over time, optionally projected by a linear head; see the module docstring.

    Args:
        backbone: factory called with ``checkpoint`` (a Hydra partial of the backbone class).
        checkpoint: the local weights (file or folder; see :mod:`.weights`).
        finetune: ``frozen``, ``full`` or ``lora``.
        layer: the hidden states read (0 = the input embeddings, ``i`` = after block ``i``); None = the output.
        embedding_dim: size of the linear head; None = no head (the backbone's width).
        lora: ``rank``, ``alpha``, ``dropout``, ``target_modules`` of :func:`add_lora`.
        frozen_layers: with ``full``: the stem and this many first blocks stay frozen.
        layer_lr_decay: with ``full``: γ of the layer-wise learning rates (1 = one rate).
        spec_augment: applied to filterbank inputs while training (None = off).
        gradient_checkpointing: recompute the blocks' activations in the backward pass (less memory).
    """

    def __init__(self, backbone: Callable[..., nn.Module], checkpoint: str | None = None, finetune: str = "lora",
                 layer: int | None = None, embedding_dim: int | None = None, lora: dict[str, Any] | None = None,
                 frozen_layers: int = 0, layer_lr_decay: float = 1.0, spec_augment: nn.Module | None = None,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        if finetune not in FINETUNE:
            raise UserError(f"model.encoder.finetune must be one of {', '.join(FINETUNE)}, got {finetune!r}")
        if not 0.0 < layer_lr_decay <= 1.0:
            raise UserError(f"model.encoder.layer_lr_decay must be in (0, 1], got {layer_lr_decay}")
        self.backbone = backbone(checkpoint=checkpoint)
        self.finetune, self.layer = finetune, layer
        self.frozen_layers, self.layer_lr_decay = int(frozen_layers), float(layer_lr_decay)
        blocks = len(self.backbone.blocks)
        if layer is not None and not -blocks - 1 <= layer <= blocks:
            raise UserError(f"model.encoder.layer={layer}: the backbone has {blocks} blocks (0..{blocks})")
        if not 0 <= self.frozen_layers <= blocks:
            raise UserError(f"model.encoder.frozen_layers must be in 0..{blocks}, got {frozen_layers}")
        if finetune == "frozen":
            self.backbone.requires_grad_(False)
        elif finetune == "lora":
            add_lora(self.backbone, **(lora or {}))
        elif self.frozen_layers:
            trained = {id(p) for block in self.backbone.blocks[self.frozen_layers:] for p in block.parameters()}
            for parameter in self.backbone.parameters():
                parameter.requires_grad_(id(parameter) in trained)
        self.spec_augment = spec_augment
        self.head = None if embedding_dim is None else nn.Linear(self.backbone.hidden_size, int(embedding_dim), bias=False)
        self.embedding_dim = int(embedding_dim or self.backbone.hidden_size)
        if gradient_checkpointing:
            self.backbone.set_gradient_checkpointing(True)
        self.train()  # from_pretrained returns eval mode; Lightning keeps the modes it finds

    def train(self, mode: bool = True) -> "PretrainedEncoder":
        super().train(mode)
        if self.finetune == "frozen":
            self.backbone.eval()
        return self

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4 or features.shape[1:3] != (1, 1):
            raise UserError(f"a pre-trained encoder reads waveforms [N, 1, 1, samples], got {tuple(features.shape)}: "
                             "set data/frontend=waveform")
        x = self.backbone.inputs(features.reshape(len(features), -1))
        if self.training and self.spec_augment is not None and self.backbone.spectrogram_input:
            x = self.spec_augment(x.transpose(1, 2)[:, None])[:, 0].transpose(1, 2)  # [N, mels, frames] masks
        pooled = self.backbone(x, self.layer).mean(dim=1)
        return pooled if self.head is None else self.head(pooled)

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups of the trainable parameters at their layer-wise rates (one group when
        ``layer_lr_decay`` is 1)."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        if self.layer_lr_decay == 1.0 or self.finetune != "full":
            return [{"params": trainable, "lr": lr}]
        depth = len(self.backbone.blocks)
        scale = {id(p): self.layer_lr_decay ** (depth + 1) for p in self.backbone.parameters()}
        for i, block in enumerate(self.backbone.blocks):
            scale.update({id(p): self.layer_lr_decay ** (depth - i) for p in block.parameters()})
        groups: dict[float, list] = {}
        for p in trainable:
            groups.setdefault(scale.get(id(p), 1.0), []).append(p)
        return [{"params": ps, "lr": lr * s} for s, ps in sorted(groups.items())]

