"""Any Hugging Face ``transformers`` audio encoder saved in a local folder (``save_pretrained``):
AST (``ASTModel``), wav2vec 2.0, HuBERT, WavLM, Data2Vec-Audio through ``AutoModel``, and models
whose folder carries their own code (``trust_remote_code``, e.g. EAT).

The folder's feature extractor (``preprocessor_config.json``) is read for its settings only; the
features are computed on the device with the same operations: AST's Kaldi filterbank (Hanning
window, padded or cut to ``max_length`` frames, ``(x - mean) / (2 std)``), or the waveform models'
per-clip zero-mean unit-variance normalisation (``do_normalize``). Everything loads with
``local_files_only=True``: ``HF_HUB_OFFLINE=1`` changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from asd_lightning.models.components.encoders.fbank import KaldiFbank
from asd_lightning.models.components.encoders.weights import SETTING, resolve_weights
from asd_lightning.utils.errors import UserError

HINT = ("a folder written by transformers' save_pretrained, e.g. `huggingface-cli download "
        "MIT/ast-finetuned-audioset-10-10-0.4593 --local-dir <folder>` on a machine with network")


def _blocks(model: nn.Module, count: int) -> nn.ModuleList:
    """The transformer layers: the first ``nn.ModuleList`` of ``count`` modules (``encoder.layer``
    of AST, ``encoder.layers`` of wav2vec 2.0 and its kin)."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise UserError(f"{type(model).__name__}: no list of {count} transformer layers found")


class HFAudioBackbone(nn.Module):
    """A local ``transformers`` audio model: ``inputs(wave)`` → model input on the device,
    ``forward(inputs, layer)`` → ``[N, T, D]`` hidden states of ``layer`` (None: the model's output).

    Args:
        checkpoint: the local folder (or a repo id already in the local Hugging Face cache).
        sample_rate: the data's sample rate; must be the extractor's.
        trust_remote_code: let a folder's own modelling code run (EAT and other custom models).
    """

    def __init__(self, checkpoint: str, sample_rate: int = 16000, trust_remote_code: bool = False) -> None:
        super().__init__()
        try:
            from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
        except ImportError as error:
            raise ImportError("transformers encoders need the `encoders` extra: pip install 'asd-lightning[encoders]'") from error
        folder = resolve_weights(checkpoint, "folder", SETTING, HINT)
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True,
                                                         trust_remote_code=trust_remote_code)
        rate = int(getattr(extractor, "sampling_rate", sample_rate))
        if rate != sample_rate:
            raise UserError(f"{folder} expects {rate} Hz audio, the data is decoded at {sample_rate} Hz "
                             f"(set data.decode.sample_rate={rate} data.decode.resample=true)")
        self.model = AutoModel.from_pretrained(folder, config=config, local_files_only=True,
                                               trust_remote_code=trust_remote_code)
        self.pretrained_source = str(folder)  # where the weights came from (bundle.json)
        self.hidden_size = int(config.hidden_size)
        self.blocks = _blocks(self.model, int(config.num_hidden_layers))
        self.fbank = None
        self.normalize = False
        if hasattr(extractor, "num_mel_bins"):  # AST-style filterbank input
            self.fbank = KaldiFbank(sample_rate=rate, num_mel_bins=int(extractor.num_mel_bins),
                                    mean=float(extractor.mean), std=float(extractor.std), scale=1.0,
                                    window_type="hanning", max_length=int(extractor.max_length))
            if not getattr(extractor, "do_normalize", True):
                self.fbank = KaldiFbank(**{**self.fbank.__dict__, "mean": 0.0, "std": 0.5})
        elif int(getattr(extractor, "feature_size", 0)) == 1:  # raw-waveform models
            self.normalize = bool(getattr(extractor, "do_normalize", False))
        else:
            raise UserError(f"{folder}: feature extractor {type(extractor).__name__} is not supported "
                             "(an AST-style filterbank or a raw-waveform extractor is)")

    @property
    def spectrogram_input(self) -> bool:
        return self.fbank is not None

    def inputs(self, wave: torch.Tensor) -> torch.Tensor:
        """``[N, samples]`` → the model's input: ``[N, frames, mel bins]`` or ``[N, samples]``."""
        if self.fbank is not None:
            return self.fbank(wave)
        wave = wave.float()
        if self.normalize:
            wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True, correction=0) + 1e-7)
        return wave

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self.model.is_gradient_checkpointing:
            self.model.gradient_checkpointing_disable()

    def forward(self, inputs: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        out = self.model(inputs, output_hidden_states=layer is not None)
        return out.last_hidden_state if layer is None else out.hidden_states[layer]
