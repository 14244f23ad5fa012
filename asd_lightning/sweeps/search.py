"""Hyperparameter search per machine type: one Optuna study per machine type (more exactly, per
combination of the values swept on the command line), trials run by Hydra's launcher.

``asd-train -m hparams_search=<name> data.machine_types=[fan],[gearbox] ...``:

1. every study samples ``hydra.sweeper.params`` (Hydra's sweep syntax, :mod:`.space`) and runs
   ``n_trials`` trials with ``tune_overrides`` (the tuning sections, e.g.
   ``protocol=two_bce_dcase2021_tuning``); the objective is the trial's ``optimized_metric``;
   the studies' trials are launched together, ``n_jobs`` per study at a time;
2. the best trial of each study is then re-scored (``final=rescore``: its checkpoint, tested
   with ``report_overrides``, the held-out sections) or re-run (``final=rerun``) in
   ``<sweep>/<machine>/best``, so the reported number never comes from the sections the search
   looked at; its results table is the multirun's table;
3. each best trial becomes ``<config folder>/experiment/tuned/<method>/<machine>.yaml``
   (:mod:`.export`), i.e. ``experiment=tuned/<method>/<machine>`` with
   ``hydra.searchpath=[file://<config folder>]`` (the search prints that command). The config
   folder is ``<sweep>/configs`` by default, never the package's own ``conf/``; a given
   ``export_dir`` is the config folder (or, ending in ``experiment/tuned``, the folder in it).

Before the first trial every study's report sections are checked: they must hold labelled
test clips (else every trial would run and the report then fail); sections shared with the
tuning sections are reported with a warning (the reported score would not be held out).

Studies live in an Optuna journal file (``storage``, in the sweep folder by default; an RDB URL
also works): several workers (e.g. SLURM jobs running the same command with the same
``hydra.sweep.dir``) add trials to the same studies, and a rerun continues from the stored
trials. A trial whose worker died (same host and its process gone, or no heartbeat for
``stale_after_s``) is marked failed and tried again with the same parameters in its own folder,
from its ``last.ckpt`` (every trial runs with ``ckpt_path=last``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shlex
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from asd_lightning.sweeps.export import tuned_config, write_tuned_config
from asd_lightning.sweeps.runs import SEARCH_MANIFEST
from asd_lightning.sweeps.space import parse_space
from asd_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

WORKER, HEARTBEAT, STALE = "asd_worker", "asd_heartbeat", "asd_stale"
FINAL_FOLDER = "best"
RUN_ONLY = ("trial", "ckpt_path", "train", "callbacks.model_checkpoint")  # how the final job ran, not the method


def method_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of a final job that belong in its exported config: not how it ran
    (``RUN_ONLY``), nor Hydra's settings (``hydra.*`` values, ``hydra/launcher`` and other groups)."""
    return [o for o in overrides
            if o.split("=", 1)[0].lstrip("+~") not in RUN_ONLY and not o.lstrip("+~").startswith(("hydra.", "hydra/"))]


@dataclass
class Cell:
    """One study: the command-line overrides of one combination and what its config says."""

    label: str
    overrides: list[str]
    groups: list[str]
    machines: list[str]


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class Heartbeat:
    """Marks this worker's running trials alive every ``interval`` seconds (a daemon thread)."""

    def __init__(self, storage: Any, interval: float) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="asd-search-heartbeat", daemon=True)

    def beat(self, trial_id: int) -> None:
        self.storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def add(self, trial_id: int) -> None:
        self.storage.set_trial_system_attr(trial_id, WORKER, this_worker())
        self.beat(trial_id)
        with self._lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.beat(trial_id)
                except Exception:  # noqa: BLE001 - finished meanwhile
                    pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def recover_stale(study: Any, storage: Any, stale_after_s: float) -> int:
    """Fail the running trials whose worker is gone and queue each again (same parameters, same
    folder, resumed from its ``last.ckpt``); returns how many."""
    from optuna.trial import TrialState

    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER, "")
        beat = trial.system_attrs.get(HEARTBEAT, trial.datetime_start.timestamp())
        if not (_process_gone(worker) or time.time() - beat > stale_after_s):
            continue
        try:
            storage.set_trial_system_attr(trial._trial_id, STALE, True)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker finished or recovered it first
            continue
        study.enqueue_trial(trial.params, user_attrs={"folder": trial.user_attrs.get("folder")}, skip_if_exists=False)
        log.warning("study %s: trial %d of worker %s stopped without a result; it runs again in %s",
                    study.study_name, trial.number, worker or "?", trial.user_attrs.get("folder"))
        recovered += 1
    return recovered


def trials_to_ask(study: Any, n_trials: int, n_jobs: int) -> int:
    """How many trials this worker starts now: up to ``n_jobs``, until the completed and running
    trials (of every worker) make ``n_trials``; queued retries are among them."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    failed = sum(t.state == TrialState.FAIL and not t.system_attrs.get(STALE) for t in trials)
    if failed >= n_trials:
        raise RuntimeError(f"study {study.study_name}: {failed} trials failed (see their folders and logs)")
    taken = sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials)
    return max(0, min(n_jobs, n_trials - taken))


@contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """A non-blocking exclusive lock on ``path``: yields False when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def objective(ret: JobReturn, metric: str) -> float:
    """The trial's objective from its job, or an error saying why there is none."""
    if ret.status != JobStatus.COMPLETED:
        cause = ret._return_value if isinstance(ret._return_value, BaseException) else None
        raise RuntimeError(f"the job in {ret.working_dir} failed: {ret._return_value!r}") from cause
    value = ret.return_value
    if value is None or not math.isfinite(float(value)):
        raise RuntimeError(f"the run logged no finite {metric!r} (got {value}); set optimized_metric=<a logged metric>")
    return float(value)


def tested_checkpoint(folder: Path) -> Path:
    """The weights a trial tested: its best checkpoint by the monitored metric, or, when it kept
    none (no validation clips), its final weights, i.e. ``last.ckpt``."""
    found = sorted((folder / "checkpoints").glob("epoch_*.ckpt"))
    last = folder / "checkpoints" / "last.ckpt"
    if len(found) == 1 or (not found and last.is_file()):
        return found[0] if found else last
    raise FileNotFoundError(f"{folder / 'checkpoints'} holds {len(found)} epoch_*.ckpt files and "
                            f"{'a' if last.is_file() else 'no'} last.ckpt, so the weights the trial tested are "
                            "unknown; re-run the best trial instead: hydra.sweeper.final=rerun")


def _sections(data: DictConfig) -> list[int] | None:
    sections = data.get("test_sections")
    return None if sections is None else sorted(int(s) for s in sections)


def check_report_sections(label: str, tune: DictConfig, report: DictConfig, report_overrides: Sequence[str]) -> None:
    """The ``data`` configs of a study's trials (``tune``) and of its held-out report
    (``report``): raise when the report sections have no labelled test clips; warn when they
    overlap the tuning sections."""
    tuned, reported = _sections(tune), _sections(report)
    if tuned is None or reported is None or set(tuned) & set(reported):
        log.warning("study %s: the report sections (%s) overlap the tuning sections (%s), so the reported score is "
                    "not held out; set hydra.sweeper.report_overrides to other sections", label,
                    reported or "all", tuned or "all")
    root = Path(str(report.root)).expanduser()
    if not root.is_dir():  # a synthetic set written by the first run, or a missing folder the preflight names
        return
    from asd_lightning.data.clip_index import build_clip_index

    clips = build_clip_index(root, int(report.year), machine_types=list(report.machine_types), sections=reported,
                             splits=["test"], ground_truth=report.get("ground_truth"), on_unmatched="warn")
    if report.get("test_domains") is not None:
        clips = clips[clips["domain"].isin(list(report.test_domains)) | (clips["domain"] == "unknown")]
    where = (f"the search reports on test section(s) {reported or 'all'} of {list(report.machine_types)} "
             f"({' '.join(report_overrides) or 'no report_overrides'})")
    if clips.empty:
        raise UserError(f"{where}, but {root} holds no such test clips: every trial would run and the report then "
                        "fail; set hydra.sweeper.report_overrides to sections with test clips")
    if (clips["label"] == "unknown").all():
        raise UserError(f"{where}, but their test clips under {root} are unlabelled: set data.ground_truth=<the "
                        "official ground truth> (or report on labelled sections)")


class PerMachineSearch:
    """The search behind ``hydra/sweeper=per_machine_optuna`` (see the module docstring)."""

    def __init__(self, method: str, n_trials: int, n_jobs: int = 1, direction: str = "maximize",
                 storage: str | None = None, study_name: str | None = None, sampler: Any = None,
                 params: DictConfig | None = None, tune_overrides: Sequence[str] = (),
                 report_overrides: Sequence[str] = (), final: str = "rescore", export_dir: str | None = None,
                 export_exclude: Sequence[str] = (), max_failure_rate: float = 0.0, stale_after_s: float = 600.0,
                 heartbeat_s: float = 60.0) -> None:
        if final not in ("rescore", "rerun"):
            raise ValueError(f"hydra.sweeper.final must be rescore or rerun, got {final!r}")
        if not method:
            raise ValueError("hydra.sweeper.method names the exported configs (tuned/<method>/<machine>); set it")
        self.method, self.n_trials, self.n_jobs, self.direction = str(method), int(n_trials), int(n_jobs), direction
        self.storage, self.study_name, self.sampler = storage, study_name or str(method), sampler
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params or {})
        self.tune_overrides, self.report_overrides = list(tune_overrides), list(report_overrides)
        self.final, self.export_dir, self.export_exclude = final, export_dir, list(export_exclude)
        self.max_failure_rate, self.stale_after_s, self.heartbeat_s = max_failure_rate, stale_after_s, heartbeat_s
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.metric = str(config.get("optimized_metric"))
        self.job_idx = 0

    # ------------------------------------------------------------------ studies
    def cells(self, arguments: list[str]) -> list[Cell]:
        """One cell per combination of the values swept on the command line."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        combinations = BasicSweeper.split_arguments(parsed, None)[0] if parsed else [[]]
        swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
        cells = []
        for overrides in combinations:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            machines = [str(m) for m in cfg.data.machine_types]
            cells.append(Cell("-".join(machines), list(overrides), list(cfg.hydra.runtime.choices), machines))
        if len({c.label for c in cells}) < len(cells):  # the same machines with other swept values
            for cell in cells:
                values = [o.split("=", 1)[1] for o in cell.overrides if o.split("=", 1)[0] in swept
                          and not o.startswith("data.machine_types=")]
                cell.label = re.sub(r"[^\w.-]+", "_", "-".join([cell.label, *values])).strip("_")
        return cells

    def check_sections(self, cells: list[Cell]) -> None:
        """Every study's report sections, before the first trial (:func:`check_report_sections`)."""
        load = self.hydra_context.config_loader.load_sweep_config
        for cell in cells:
            tune = load(self.config, cell.overrides + self.tune_overrides)
            report = load(self.config, cell.overrides + self.report_overrides)
            check_report_sections(cell.label, tune.data, report.data, self.report_overrides)

    def storage_object(self) -> Any:
        """The shared storage: a journal file (default ``<sweep>/optuna.journal``) or an RDB URL."""
        from optuna.storages import JournalStorage, get_storage
        from optuna.storages.journal import JournalFileBackend

        where = str(self.storage or self.sweep_dir / "optuna.journal")
        if "://" in where:
            return get_storage(where)
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(where))

    def study(self, cell: Cell, storage: Any) -> Any:
        import optuna

        sampler = self.sampler() if callable(self.sampler) else self.sampler
        return optuna.create_study(study_name=f"{self.study_name}-{cell.label}", storage=storage, sampler=sampler,
                                   direction=self.direction, load_if_exists=True)

    # ------------------------------------------------------------------ sweep
    def sweep(self, arguments: list[str]) -> list:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        distributions, fixed = parse_space(self.params)
        fixed_overrides = [f"{k}={v}" for k, v in fixed.items()]
        cells = self.cells(arguments)
        self.check_sections(cells)
        storage = self.storage_object()
        studies = {cell.label: self.study(cell, storage) for cell in cells}
        log.info("search %s: %d studies (%s), %d trials each, objective %s (%s) with %s; storage %s",
                 self.method, len(cells), ", ".join(studies[c.label].study_name for c in cells), self.n_trials,
                 self.metric, self.direction, " ".join(self.tune_overrides) or "no tuning overrides",
                 self.storage or self.sweep_dir / "optuna.journal")
        with Heartbeat(storage, self.heartbeat_s) as heartbeat:
            while True:
                batch = []
                for cell in cells:
                    study = studies[cell.label]
                    recover_stale(study, storage, self.stale_after_s)
                    for _ in range(trials_to_ask(study, self.n_trials, self.n_jobs)):
                        trial = study.ask(distributions)
                        folder = trial.user_attrs.get("folder") or f"{cell.label}/trial_{trial.number:03d}"
                        trial.set_user_attr("folder", folder)
                        heartbeat.add(trial._trial_id)
                        params = [f"{k}={v}" for k, v in trial.params.items()]
                        batch.append((study, trial, cell.overrides + self.tune_overrides + fixed_overrides + params +
                                      [f"trial={trial.number}", "ckpt_path=last", f"hydra.sweep.subdir={folder}"]))
                if not batch:
                    break
                self.run_trials(batch, heartbeat)
        return self.finish(cells, studies, fixed_overrides)

    def run_trials(self, batch: list[tuple], heartbeat: Heartbeat) -> None:
        """Launch the trials of ``batch`` (study, trial, overrides) and tell their objectives."""
        from optuna.trial import TrialState

        returns = self.launcher.launch([overrides for *_, overrides in batch], initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        failures = []
        for (study, trial, _), ret in zip(batch, returns):
            heartbeat.remove(trial._trial_id)
            try:
                study.tell(trial, objective(ret, self.metric))
            except RuntimeError as error:
                study.tell(trial, state=TrialState.FAIL)
                log.warning("study %s, trial %d: %s", study.study_name, trial.number, error)
                failures.append(error)
        if failures and len(failures) / len(returns) > self.max_failure_rate:
            raise failures[0]

    # ------------------------------------------------------------------ best trials
    def finish(self, cells: list[Cell], studies: dict, fixed_overrides: list[str]) -> list:
        """Re-score (or re-run) each finished study's best trial on the held-out sections and
        export it; studies with trials still running elsewhere are left to that worker."""
        from optuna.trial import TrialState

        ready, jobs = [], []
        with _locks([self.sweep_dir / cell.label / ".final.lock" for cell in cells]) as held:
            for cell, mine in zip(cells, held):
                study = studies[cell.label]
                if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)) or not mine:
                    log.info("study %s: trials of another worker are still running; that worker reports it",
                             study.study_name)
                    continue
                best = study.best_trial
                final = self.sweep_dir / cell.label / FINAL_FOLDER
                record = final.parent / "best.json"
                if record.is_file() and json.loads(record.read_text()).get("trial") != best.number:
                    shutil.rmtree(final, ignore_errors=True)  # an earlier best trial's report
                overrides = self.final_overrides(cell, best, fixed_overrides)
                ready.append((cell, study, best))
                jobs.append(overrides)
            returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx) if jobs else []
        self.job_idx += len(jobs)
        failed = []
        try:
            for (cell, study, best), overrides, ret in zip(ready, jobs, returns):
                try:  # a failed final job of one machine type leaves the others' reports and exports
                    self.report_cell(cell, study, best, overrides, ret)
                except Exception as error:  # noqa: BLE001 - named below, raised after the manifest
                    log.error("study %s: the best trial's final job failed: %s", study.study_name, error)
                    failed.append((study.study_name, error))
        finally:
            self.write_manifest(cells, studies)  # asd-report reads only the final jobs, never the trials
        if failed:
            raise RuntimeError("final job(s) failed: " + "; ".join(f"{name}: {error}" for name, error in failed)) \
                from failed[0][1]
        return [returns]

    def final_overrides(self, cell: Cell, best: Any, fixed_overrides: list[str]) -> list[str]:
        """The overrides of a study's final job: the best trial on the held-out sections, named
        ``trial=<n>-heldout`` (W&B: ``<machine>-seed<s>-trial<n>-heldout``, not the trial's name)."""
        overrides = cell.overrides + self.report_overrides + fixed_overrides
        overrides += [f"{k}={v}" for k, v in best.params.items()]
        overrides += [f"trial={best.number}-heldout", f"hydra.sweep.subdir={cell.label}/{FINAL_FOLDER}"]
        if self.final == "rescore":
            ckpt = tested_checkpoint(self.sweep_dir / best.user_attrs["folder"])
            overrides += ["train=false", f"ckpt_path={ckpt}", "++callbacks.model_checkpoint=null"]
        else:
            overrides += ["ckpt_path=last"]
        return overrides

    def report_cell(self, cell: Cell, study: Any, best: Any, overrides: list[str], ret: JobReturn) -> None:
        """``best.json``, ``trials.csv`` and the exported experiment config of one study."""
        heldout = objective(ret, self.metric)
        folder = self.sweep_dir / cell.label
        study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
        export = self.export_path(cell)
        tuned = method_overrides(overrides)
        header = [f"Tuned by asd-train -m ... hparams_search: study {study.study_name} ({self.sweep_dir}), "
                  f"best of {len(study.trials)} trials: trial {best.number}.",
                  f"{self.metric}: {best.value:.4f} on the tuning sections ({' '.join(self.tune_overrides) or '-'}), "
                  f"{heldout:.4f} on the held-out sections ({' '.join(self.report_overrides) or '-'}).",
                  f"Rerun: {self.rerun_command(cell)}"]
        write_tuned_config(export, tuned_config(tuned, cell.groups, self.export_exclude, header))
        (folder / "best.json").write_text(json.dumps({
            "study": study.study_name, "trial": best.number, "params": best.params, "metric": self.metric,
            "tuning_value": best.value, "heldout_value": heldout, "trial_folder": best.user_attrs["folder"],
            "final_folder": f"{cell.label}/{FINAL_FOLDER}", "export": str(export)}, indent=2) + "\n")
        log.info("study %s: best trial %d (%s = %.4f tuning, %.4f held-out) exported to %s", study.study_name,
                 best.number, self.metric, best.value, heldout, export)
        print(f"tuned config of {cell.label}: {export}\n  rerun it with: {self.rerun_command(cell)}", flush=True)

    def export_root(self) -> Path:
        """The config folder the tuned configs go into (``hydra.searchpath`` finds them there):
        ``<sweep>/configs``, or ``export_dir`` (the folder above ``experiment/tuned`` when it
        names that folder)."""
        if not self.export_dir:
            return self.sweep_dir / "configs"
        folder = Path(self.export_dir).expanduser().absolute()
        return folder.parent.parent if folder.parts[-2:] == ("experiment", "tuned") else folder

    def export_path(self, cell: Cell) -> Path:
        return self.export_root() / "experiment" / "tuned" / self.method / f"{cell.label}.yaml"

    def rerun_command(self, cell: Cell) -> str:
        """The command that runs an exported config (with the search path that finds it)."""
        return shlex.join(["asd-train", f"experiment=tuned/{self.method}/{cell.label}",
                           f"hydra.searchpath=[file://{self.export_root()}]"]) + " data.root=<dataset>"

    def write_manifest(self, cells: list[Cell], studies: dict) -> None:
        (self.sweep_dir / SEARCH_MANIFEST).write_text(json.dumps({
            "method": self.method, "metric": self.metric, "direction": self.direction,
            "storage": str(self.storage or self.sweep_dir / "optuna.journal"),
            "cells": [{"label": c.label, "study": studies[c.label].study_name, "overrides": c.overrides,
                       "final": f"{c.label}/{FINAL_FOLDER}"} for c in cells]}, indent=2) + "\n")


@contextmanager
def _locks(paths: list[Path]) -> Iterator[list[bool]]:
    """Try the exclusive locks of several paths; yields which were acquired."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(exclusive(path)) for path in paths]
