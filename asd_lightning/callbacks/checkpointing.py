"""Checkpoints that resume exactly: ``last.ckpt`` after every epoch, with the RNG states.

Lightning 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only at a step where
it also saved a top-k checkpoint, so with ``monitor`` set ``last.ckpt`` can stay at an early
epoch. :class:`ModelCheckpoint` here writes it at the end of every training epoch, after that
epoch's validation, whatever the monitored metric does. :class:`RNGState` puts the torch,
numpy, Python (and CUDA) random states into every checkpoint and sets them again when training
resumes, so a resumed run continues exactly as one that was never stopped. Every checkpoint is
written atomically (a hidden ``.<name>.partial`` file, then renamed), so a full disk or a kill
while saving never leaves a truncated checkpoint under the real name. The optimiser, LR
schedule, epoch (hence the samplers' epoch) and the best-checkpoint record are Lightning's own
checkpoint state.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; with ``save_last`` it writes ``last.ckpt`` at the end of
    every epoch (after the epoch's validation when there is one), not only with a new top-k."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save_last_if_unsaved(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_unsaved(trainer)  # also epochs without validation (check_val_every_n_epoch > 1)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Lightning's save, into ``.<name>.partial`` first, renamed once complete (removed on error)."""
        partial = Path(filepath).with_name(f".{Path(filepath).name}.partial")
        try:
            trainer.save_checkpoint(partial, self.save_weights_only)
            if trainer.is_global_zero:
                os.replace(partial, filepath)
        except BaseException:
            if trainer.is_global_zero:
                partial.unlink(missing_ok=True)
            raise
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:  # notify loggers (W&B's log_model), as Lightning does
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_last_if_unsaved(self, trainer: L.Trainer) -> None:
        # skipped when anything (top-k and with it last.ckpt) was saved at this step already
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def rng_states() -> dict[str, Any]:
    """The global random states of torch, numpy, Python and every CUDA device, as tensors and
    plain Python values (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
        "python": [version, list(state), python_gauss],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states` (CUDA states only where the devices are there)."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, state, python_gauss = states["python"]
    random.setstate((version, tuple(state), python_gauss))


class RNGState(L.Callback):
    """Random states in every checkpoint, set again as soon as a checkpoint is loaded to resume
    training (not when ``trainer.test`` loads one).

    Loading is the moment to restore them: a resumed fit creates its first training iterator
    before any epoch hook runs, and it skips the sanity check, so nothing draws between loading
    and the point where the uninterrupted run drew next.
    """

    def __init__(self) -> None:
        self._fitting = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"  # Lightning calls setup before it loads a checkpoint

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fitting and "rng" in state_dict:
            set_rng_states(state_dict["rng"])
