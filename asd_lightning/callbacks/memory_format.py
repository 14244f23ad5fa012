"""Channels-last memory format for convolutional encoders (cuDNN's NHWC kernels on a GPU)."""

from __future__ import annotations

import lightning as L
import torch


class ChannelsLast(L.Callback):
    """Stores the method's 4-D weights channels-last when a fit, validation, test or prediction
    starts (after ``configure_model`` has built any class-sized network), so convolutions and
    batch norm run NHWC kernels. The parameters keep their identity (``param.data`` changes),
    so the optimiser's references hold. The inputs need nothing: a ``[N, 1, mels, frames]``
    log-mel batch is already channels-last, and each layer's output follows its weights.
    Results equal the default layout's up to float rounding (tested).

    Why: on one H200 (benchmarks/h200-2026-12-04), 87 % of DG-Mix pre-training's GPU time went
    to PyTorch's generic NCHW batch-norm and depthwise-convolution kernels, which NHWC replaces.
    The speed-up itself is not measured yet; switch it on with ``callbacks=[default,channels_last]``.
    """

    @staticmethod
    def _convert(pl_module: L.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._convert(pl_module)
