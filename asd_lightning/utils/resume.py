"""Resuming a run in its own folder: ``ckpt_path=last`` and what an interrupted run says.

``ckpt_path=last`` resolves to the ``last.ckpt`` of the run's checkpoint callback (by default
``<output_dir>/checkpoints/last.ckpt``) when it exists and to a fresh start otherwise, so the same
command serves the first start and every restart of a job whose run folder is fixed
(``hydra.run.dir=<folder>``; a multirun with a fixed ``hydra.sweep.dir`` gives each job its
own fixed ``<sweep dir>/<job number>``): a requeued job resumes where it stopped.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from asd_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

LAST = "last"
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


def last_checkpoint(trainer: L.Trainer) -> Path:
    """Where the run writes ``last.ckpt``: the first checkpoint callback with ``save_last``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last:
            folder = callback.dirpath or Path(trainer.default_root_dir) / "checkpoints"
            return Path(folder) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    raise UserError("ckpt_path=last needs a checkpoint callback with save_last=true "
                     "(callbacks.model_checkpoint.save_last=true)")


def resolve_ckpt_path(ckpt_path: str | None, trainer: L.Trainer) -> str | None:
    """``last`` → the run's ``last.ckpt`` if it exists, else None (a fresh start); other values unchanged."""
    if ckpt_path != LAST:
        return ckpt_path
    path = last_checkpoint(trainer)
    if path.is_file():
        log.info("resuming from %s", path)
        return str(path)
    log.info("ckpt_path=last: no %s yet, starting from scratch", path)
    return None


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint was written at, None when it cannot be read."""
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["epoch"])
    except Exception:  # noqa: BLE001 - a half-written file after a kill: report it as absent
        return None


def _hydra_value(text: str) -> str:
    """A path as a Hydra override value (quoted when it holds characters the grammar reserves)."""
    return text if re.fullmatch(r"[\w/.\-:+~]+", text) else "'" + text.replace("'", "\\'") + "'"


def program() -> list[str]:
    """How this process was started: the ``asd-train`` console script, or ``python -m
    asd_lightning.train``; ``asd-train`` when ``train()`` runs inside another program (a
    benchmark script, a notebook), whose own command would not take these overrides."""
    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None)
    if module and module.startswith("asd_lightning."):
        return [sys.executable, "-m", module]
    if sys.argv and Path(sys.argv[0]).name == "asd-train":
        return [sys.argv[0]]
    return ["asd-train"]


def resume_command(overrides: Sequence[str], output_dir: str | Path) -> str:
    """The shell command that resumes this run into ``output_dir``: the job's own Hydra
    ``overrides``, its folder fixed and ``ckpt_path=last``."""
    kept = [o for o in overrides if not re.match(r"^[+~]*(ckpt_path|hydra\.run\.dir)=", o)]
    fixed = [f"hydra.run.dir={_hydra_value(str(Path(output_dir).resolve()))}", f"ckpt_path={LAST}"]
    return shlex.join(program() + kept + fixed)


def sweep_resume_command(sweep_dir: str | Path) -> str | None:
    """The shell command that resumes a whole multirun in ``sweep_dir`` (its ``multirun.yaml``):
    the same sweep, its folder fixed and ``ckpt_path=last``, so every job resumes or re-tests in
    its own ``<sweep dir>/<job number>``; None without ``multirun.yaml``."""
    from omegaconf import OmegaConf

    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file():
        return None
    overrides = OmegaConf.load(saved).hydra.overrides
    kept = [o for o in overrides.hydra if not re.match(r"^hydra\.(sweep\.dir|mode)=", o)]
    kept += [o for o in overrides.task if not re.match(r"^[+~]*ckpt_path=", o)]
    fixed = [f"hydra.sweep.dir={_hydra_value(str(Path(sweep_dir).resolve()))}", f"ckpt_path={LAST}"]
    return shlex.join(program() + ["-m", *kept, *fixed])


def interrupted_message(trainer: L.Trainer, overrides: Sequence[str], output_dir: str | Path, cwd: str | Path,
                        stage: str, sweep_dir: str | Path | None = None) -> str:
    """What a run interrupted by SIGTERM says: where it stopped (``stage``: ``fit`` or ``test``),
    what is saved, and the exact command that resumes it (in a multirun, ``sweep_dir``: also the
    one that resumes the whole multirun)."""
    where = f"cd {shlex.quote(str(cwd))} && "
    try:
        last = last_checkpoint(trainer)
    except ValueError:
        last = None
    if stage == "test" and last is None:  # asd-eval, or a run that keeps no last.ckpt
        return f"interrupted by SIGTERM while testing; run the same command again:\n  {where}{shlex.join(program() + list(overrides))}"
    if last is None:
        return ("interrupted by SIGTERM; this run keeps no last.ckpt (callbacks.model_checkpoint.save_last=false), "
                "so it cannot resume")
    epoch = checkpoint_epoch(last) if last.is_file() else None
    if epoch is None:
        saved = f"no epoch had finished, so resuming starts afresh in the same folder ({last} does not exist yet)"
    elif stage == "test":
        saved = f"{last} holds the end of epoch {epoch}"
    else:
        saved = f"{last} holds the end of epoch {epoch}, so training resumes at epoch {epoch + 1}"
    when = " while testing, after training" if stage == "test" else ""
    message = (f"interrupted by SIGTERM{when}; {saved}. Resume it (it continues exactly as an uninterrupted run "
               f"would) with:\n  {where}{resume_command(overrides, output_dir)}")
    sweep = sweep_resume_command(sweep_dir) if sweep_dir else None
    if sweep:
        message += (f"\nor resume the whole multirun (each job in its own folder; finished jobs only test again) "
                    f"with:\n  {where}{sweep}")
    return message
