"""A test-only callback that holds a child training process at a known point, to kill or
signal it there (``+callbacks.pause._target_=pause_callback.PauseAt``)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class PauseAt(L.Callback):
    """After training batch ``batch`` of epoch ``epoch``, touch ``marker`` and wait up to
    ``seconds``, or until a SIGTERM reaches the trainer (which then stops after this batch)."""

    def __init__(self, epoch: int, batch: int, marker: str, seconds: float = 600.0) -> None:
        self.epoch, self.batch, self.marker, self.seconds = epoch, batch, Path(marker), seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not self.marker.exists():
            self.marker.write_text(f"{trainer.current_epoch} {batch_idx}")
            end = time.monotonic() + self.seconds
            while time.monotonic() < end and not trainer.received_sigterm:
                time.sleep(0.05)


class TerminateAt(L.Callback):
    """After training batch ``batch`` of epoch ``epoch``, send SIGTERM to this very process."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
