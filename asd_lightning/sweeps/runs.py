"""Finished run folders of a sweep, and the jobs a sweep should have produced.

A run folder is what ``asd-train`` leaves: ``.hydra/overrides.yaml`` (the job's overrides),
``.hydra/config.yaml`` (its config) and, once scored, ``submission/scores.json`` (plus
``two_bce_measure.json`` under ``score_protocol=two_bce``). A multirun folder also holds
``multirun.yaml``, from which the jobs of a grid sweep are listed again (Hydra's own expansion),
or ``search.json`` for a per-machine-type search (its final runs on the held-out sections).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from asd_lightning.metrics.official import ScoreReport

SCORES = Path("submission") / "scores.json"
TWO_BCE = Path("submission") / "two_bce_measure.json"
SEARCH_MANIFEST = "search.json"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@dataclass
class Run:
    """One job's folder: its overrides, seed and (when it finished scoring) its score report."""

    folder: Path
    overrides: list[str]
    seed: int | None
    report: ScoreReport | None
    two_bce: bool = False

    @property
    def label(self) -> str:
        return " ".join(self.overrides) or "(no overrides)"


@dataclass
class Problem:
    """A job the table leaves out, and why (``missing``, ``failed`` or ``duplicate``)."""

    kind: str
    job: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.job} ({self.detail})"


def is_run(folder: Path) -> bool:
    return (folder / ".hydra" / "overrides.yaml").is_file()


def read_run(folder: Path) -> Run:
    """The run in ``folder`` (``report`` is None when it has no ``submission/scores.json``)."""
    overrides = [str(o) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml")]
    config = folder / ".hydra" / "config.yaml"
    seed = OmegaConf.load(config).get("seed") if config.is_file() else None
    scores = folder / SCORES
    report = ScoreReport.load(scores) if scores.is_file() else None
    return Run(folder=folder, overrides=overrides, seed=None if seed is None else int(seed), report=report,
               two_bce=(folder / TWO_BCE).is_file())


def _job_key(overrides: list[str]) -> tuple[str, ...]:
    return tuple(sorted(overrides))


def expected_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The overrides of every job of a grid multirun (as Hydra's basic sweeper expands
    ``multirun.yaml``), or None when the folder is no grid multirun."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return None
    config = OmegaConf.load(saved)
    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _failure(folder: Path) -> str:
    log = next(iter(sorted(folder.glob("*.log"))), None)
    where = f"; see {log}" if log else ""
    return f"{folder} has no {SCORES}{where}"


def collect(paths: list[Path]) -> tuple[list[Run], list[Problem], list[str]]:
    """The scored runs under ``paths`` (multirun folders or run folders), the jobs that are
    missing, failed or duplicated, and notes (folders that belong to no job of the sweep)."""
    runs, problems, notes = [], [], []
    for path in paths:
        path = Path(path)
        if is_run(path):
            candidates, expected = [path], None
        elif (path / SEARCH_MANIFEST).is_file():
            manifest = json.loads((path / SEARCH_MANIFEST).read_text())
            finals = [path / cell["final"] for cell in manifest["cells"]]
            for folder in finals:
                if not is_run(folder):
                    problems.append(Problem("missing", str(folder), "the search has not run this final job yet"))
            candidates, expected = [f for f in finals if is_run(f)], None
        elif path.is_dir():
            candidates = sorted({p.parent.parent for p in path.rglob(".hydra/overrides.yaml")})
            expected = expected_jobs(path)
        else:
            raise FileNotFoundError(f"{path} is neither a run folder nor a multirun folder")
        found = {}
        for folder in candidates:
            run = read_run(folder)
            key = _job_key(run.overrides)
            if expected is not None and key not in {_job_key(job) for job in expected}:
                notes.append(f"{folder} is no job of this sweep (overrides: {run.label}); left out")
                continue
            if key in found and expected is not None:
                problems.append(Problem("duplicate", run.label, f"{folder} repeats {found[key].folder}; left out"))
                continue
            found[key] = run
            if run.report is None:
                problems.append(Problem("failed", run.label, _failure(folder)))
            else:
                runs.append(run)
        for number, job in enumerate(expected or []):
            if _job_key(job) not in found:
                problems.append(Problem("missing", " ".join(job), f"job #{number} has no folder in {path}"))
    return runs, problems, notes
