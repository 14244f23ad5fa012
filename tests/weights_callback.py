"""A test-only callback that saves the module's weights when training starts, i.e. after every
``setup`` and checkpoint restore and before the first step
(``+callbacks.weights._target_=weights_callback.SaveWeightsAtTrainStart``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SaveWeightsAtTrainStart(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            torch.save({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}, self.path)
