"""A test-only callback that holds a child training process at a known point, to kill or
signal it there (``+callbacks.pause._target_=pause_callback.PauseAt``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


def due(marker: Path, skip: int) -> bool:
    """Whether this run is the one to stop: ``marker`` not written yet and ``skip`` earlier runs
    (counted in ``<marker>.passed``) already passed the point; then writes the marker (this
    process id)."""
    if marker.exists():
        return False
    passed = marker.with_name(marker.name + ".passed")
    count = len(passed.read_text()) if passed.exists() else 0
    if count < skip:
        passed.write_text("x" * (count + 1))
        return False
    marker.write_text(str(os.getpid()))
    return True


class PauseAt(L.Callback):
    """After training batch ``batch`` of epoch ``epoch``, write ``marker`` (the process id) and wait
    up to ``seconds``, or until a SIGTERM reaches the trainer (which then stops after this batch).
    ``skip``: runs (in any process) that pass the point before one pauses."""

    def __init__(self, epoch: int, batch: int, marker: str, seconds: float = 600.0, skip: int = 0) -> None:
        self.epoch, self.batch, self.marker, self.seconds, self.skip = epoch, batch, Path(marker), seconds, skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and due(self.marker, self.skip):
            end = time.monotonic() + self.seconds
            while time.monotonic() < end and not trainer.received_sigterm:
                time.sleep(0.05)


class TerminateAt(L.Callback):
    """After training batch ``batch`` of epoch ``epoch``, send SIGTERM to this very process
    (with ``marker``: once, after ``skip`` runs passed the point, as :class:`PauseAt`)."""

    def __init__(self, epoch: int, batch: int, marker: str | None = None, skip: int = 0) -> None:
        self.epoch, self.batch, self.marker, self.skip = epoch, batch, marker and Path(marker), skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and (
                self.marker is None or due(self.marker, self.skip)):
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
