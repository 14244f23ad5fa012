"""`asd-train`: Hydra entry point (fit, then test with official DCASE scoring).

Examples::

    asd-train experiment=ae_baseline data=synthetic
    asd-train -m data.machine_types=[fan],[valve] logger=wandb
    asd-train experiment=ae_baseline hydra.run.dir=logs/train/runs/fan ckpt_path=last   # start or resume

Exit status: 0 done; 2 a setting or file to change (one line ``asd-train: error: ...``, no
traceback: a :class:`~asd_lightning.utils.errors.UserError`); 3 a multirun whose results table
leaves out failed jobs (named in it); 143 interrupted by SIGTERM (the message says how to
resume); 1 anything else, a bug, with its traceback (``HYDRA_FULL_ERROR=1`` for the full one).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from asd_lightning import preflight
from asd_lightning.utils import resolvers  # noqa: F401  (registers ${eval:}, ${join:}, ${wandb_offline:})
from asd_lightning.utils.errors import EXIT_USER_ERROR, MissingFileError, UserError, one_line, user_error
from asd_lightning.utils.instantiate import instantiate_callbacks, instantiate_loggers
from asd_lightning.utils.resume import EXIT_INTERRUPTED, interrupted_message, resolve_ckpt_path

log = logging.getLogger(__name__)


def config_dir() -> str:
    """The project's ``conf/`` folder (``ASD_CONF_DIR`` overrides it)."""
    candidate = Path(os.environ.get("ASD_CONF_DIR", Path(__file__).resolve().parents[1] / "conf"))
    if not (candidate / "train.yaml").is_file():
        raise MissingFileError(f"Hydra configs not found in {candidate}; install the project with "
                                "`pip install -e .` from its checkout or set ASD_CONF_DIR")
    return str(candidate)


def finish_wandb(exit_code: int | None = None) -> None:
    """Close the W&B run of this job so multirun jobs never share one (no-op without wandb)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def interrupted(trainer: L.Trainer, stage: str, name: str) -> SystemExit:
    """Report a SIGTERM (where it stopped, what is saved, how to resume) and exit non-zero."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else OmegaConf.create()
    overrides = list(OmegaConf.select(hydra_cfg, "overrides.task", default=None) or [])
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None) or trainer.default_root_dir
    cwd = OmegaConf.select(hydra_cfg, "runtime.cwd", default=None) or os.getcwd()  # train() from Python
    sweep_dir = OmegaConf.select(hydra_cfg, "sweep.dir") if hydra_cfg.get("mode") == RunMode.MULTIRUN else None
    message = interrupted_message(trainer, overrides, output_dir, cwd, stage, sweep_dir)
    log.error(message)
    if trainer.is_global_zero:
        print(f"asd-{name}: {message}", file=sys.stderr, flush=True)
    return SystemExit(EXIT_INTERRUPTED)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate everything from ``cfg``, check what the run needs, fit and test; returns the
    final logged metrics. A SIGTERM (preemption) ends it with :data:`EXIT_INTERRUPTED` and the
    command that resumes it."""
    preflight.check_settings(cfg)  # before anything is built
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    run_folder = preflight.check_run(cfg, datamodule, callbacks, model=model, trainer=trainer)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    stage, exit_code = "fit", None
    try:
        if cfg.get("train") and getattr(model, "training_free", False):
            log.info("%s is training-free: nothing to fit, testing at once", type(model).__name__)
        elif cfg.get("train"):
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), trainer))
        stage = "test"
        metrics = dict(trainer.callback_metrics)
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            ckpt = best or (None if cfg.get("train") else cfg.get("ckpt_path"))
            log.info("testing %s", ckpt or "the final weights")
            trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            metrics.update(trainer.callback_metrics)
    except SIGTERMException:
        exit_code = EXIT_INTERRUPTED
        raise interrupted(trainer, stage, cfg.get("task_name", "train")) from None
    finally:
        finish_wandb(exit_code)
        if run_folder is not None:
            run_folder.release()
    return {k: float(v) for k, v in metrics.items()}


def to_log_files(message: str) -> None:
    """Log ``message`` as an error into the job's log files only (``<task>.log``), not the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _multirun_keeps_going() -> bool:
    """A grid multirun (Hydra's basic sweeper) runs its other jobs after a failed one, and its
    results table names the failed job; searches judge failed trials themselves."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    from asd_lightning.sweeps.runs import BASIC_SWEEPER

    return OmegaConf.select(HydraConfig.get(), "sweeper._target_") == BASIC_SWEEPER


def failed(cfg: DictConfig, error: Exception) -> None:
    """A job's error: a :class:`UserError` is printed in one line (``asd-<task>: error: ...``) and
    ends a single run with :data:`EXIT_USER_ERROR`; any other error is a bug and keeps its
    traceback. In a grid multirun the job is reported (its folder has no scores, which the
    results table names) and the other jobs run; the multirun then exits non-zero."""
    name = f"asd-{cfg.get('task_name', 'train')}"
    user = user_error(error)
    if user is not None and not os.environ.get("HYDRA_FULL_ERROR"):
        error = user
        to_log_files(f"{name}: error: {one_line(error)}")  # the terminal gets it once, on stderr
        print(f"{name}: error: {one_line(error)}", file=sys.stderr, flush=True)
        if not _multirun_keeps_going():
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise error  # a search: the trial fails, the search decides
            raise SystemExit(EXIT_USER_ERROR)
        return None
    if _multirun_keeps_going():
        log.exception("%s: the job in %s failed", name, HydraConfig.get().runtime.output_dir)
        return None
    raise error


def hydra_main(job: Callable[[DictConfig], dict[str, float]], config_name: str) -> float | None:
    """Run ``job`` under Hydra with ``conf/<config_name>``; returns ``cfg.optimized_metric`` of
    the job's metrics, for sweepers (Optuna)."""

    def run(cfg: DictConfig) -> float | None:
        try:
            metrics = job(cfg)
        except Exception as error:  # noqa: BLE001 - reported below, by kind
            return failed(cfg, error)
        name = cfg.get("optimized_metric")
        return metrics.get(name) if name else None

    return hydra.main(version_base="1.3", config_path=conf_or_exit(), config_name=config_name)(run)()


def conf_or_exit() -> str:
    """:func:`config_dir`, or its error in one line and :data:`EXIT_USER_ERROR`."""
    try:
        return config_dir()
    except UserError as error:
        print(f"asd-train: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


def main() -> float | None:
    """Console entry point of ``asd-train``."""
    from asd_lightning.sweeps.export import missing_tuned_config

    missing = missing_tuned_config(sys.argv[1:], conf_or_exit())
    if missing:
        print(f"asd-train: error: {missing}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    return hydra_main(train, "train.yaml")


if __name__ == "__main__":
    main()
