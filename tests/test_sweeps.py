"""Sweeps at scale: one results table per multirun (and ``asd-report``), resuming a multirun in
its own folders, the submitit launchers (local executor on the CPU, SLURM presets) with
requeue, Lightning's SLURM ranks, and W&B for review. The hyperparameter search: test_search.py.

The end-to-end tests run real ``asd-train -m`` child processes on a tiny synthetic set (AE
baseline, 2 epochs): one basic-launcher sweep over machine types x seeds, stopped by SIGTERM and
resumed with the command it prints, and the same jobs through submitit with a requeue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from asd_lightning.metrics.official import ScoreReport
from asd_lightning.metrics.two_bce_measure import TwoBCEMeasure
from asd_lightning.sweeps.cli import EXIT_SOME_LEFT_OUT
from asd_lightning.sweeps.cli import main as report_main
from asd_lightning.sweeps.report import ResultsTable
from asd_lightning.utils.resume import EXIT_INTERRUPTED
from conftest import asd_train, child_env, finish
from test_train import compose_train
from wandb_records import offline_run


def hm(*values: float) -> float:
    return len(values) / sum(1 / v for v in values)


# ---------------------------------------------------------------- the table, from run folders
def fake_run(folder: Path, overrides: list[str], seed: int | None, rows: list[dict], year: int = 2022,
             two_bce: bool = False) -> None:
    """A finished run folder as asd-train leaves it (overrides, config, scores.json)."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"seed": seed}), folder / ".hydra" / "config.yaml")
    if rows:
        report = ScoreReport.from_rows(pd.DataFrame(rows), year)
        report.save(folder / "submission")
        if two_bce:
            TwoBCEMeasure.from_report(report).save(folder / "submission")


def rows22(machine: str, values: dict[int, tuple[float, float, float]]) -> list[dict]:
    return [{"machine": machine, "section": s, "auc_source": a, "auc_target": b, "pauc": p, "pauc_source": p,
             "pauc_target": p} for s, (a, b, p) in values.items()]


def fake_multirun(folder: Path, task: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"hydra": [], "task": task}}}), folder / "multirun.yaml")


def row(table: pd.DataFrame, **where) -> pd.Series:
    selected = table
    for key, value in where.items():
        selected = selected[selected[key] == value]
    assert len(selected) == 1, where
    return selected.iloc[0]


def test_the_table_gives_mean_std_and_every_seed_per_section_machine_type_and_overall(tmp_path: Path) -> None:
    values = {("fan", 1): {0: (0.6, 0.5, 0.55), 1: (0.7, 0.6, 0.5)}, ("fan", 2): {0: (0.8, 0.5, 0.65), 1: (0.7, 0.7, 0.5)},
              ("valve", 1): {0: (0.9, 0.8, 0.7)}, ("valve", 2): {0: (0.95, 0.6, 0.7)}}
    for i, ((machine, seed), sections) in enumerate(values.items()):
        fake_run(tmp_path / str(i), [f"data.machine_types=[{machine}]", f"seed={seed}", "experiment=ae_baseline"],
                 seed, rows22(machine, sections))
    results = ResultsTable.from_folders([tmp_path])
    table = results.table
    assert results.settings == [] and not results.problems  # machine types and seeds are no settings columns
    fan00 = row(table, machine="fan", section="00", metric="auc_source")
    assert (fan00["seed=1"], fan00["seed=2"], fan00["n"]) == (0.6, 0.8, 2)
    assert fan00["mean"] == pytest.approx(0.7) and fan00["std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    official = {(m, s): hm(*[v for sec in values[(m, s)].values() for v in sec]) for (m, s) in values}
    fan = row(table, machine="fan", section="all", metric="official_score")
    assert fan["seed=1"] == pytest.approx(official[("fan", 1)]) and fan["seed=2"] == pytest.approx(official[("fan", 2)])
    overall = row(table, machine="all", section="all", metric="official_score")  # the sections of both pooled
    for seed in (1, 2):
        pooled = [v for m in ("fan", "valve") for sec in values[(m, seed)].values() for v in sec]
        assert overall[f"seed={seed}"] == pytest.approx(hm(*pooled))
    assert overall["mean"] == pytest.approx(np.mean([overall["seed=1"], overall["seed=2"]]))
    assert list(table["machine"].drop_duplicates()) == ["fan", "valve", "all"]
    markdown = results.to_markdown()
    assert "| fan | 00 | 70.00 ± 14.14 | 50.00 ± 0.00 | 60.00 ± 7.07 |" in markdown
    assert f"| all | official score | {100 * overall['mean']:.2f} ± {100 * overall['std']:.2f} | 2 |" in markdown


def test_settings_that_follow_the_machine_type_stay_on_its_rows_and_the_others_split_the_table(tmp_path: Path) -> None:
    for i, (machine, weight) in enumerate([("fan", 0.1), ("fan", 10), ("valve", 0.1), ("valve", 10)]):
        rows = [{"machine": machine, "section": 3, "domain": "source", "auc": 0.6 + 0.01 * i, "pauc": 0.5}]
        fake_run(tmp_path / str(i), [f"experiment=two_bce/{machine}", f"model.product_weight={weight}"], 7, rows,
                 year=2021, two_bce=True)
    results = ResultsTable.from_folders([tmp_path])
    table = results.table
    assert results.settings == ["model.product_weight", "experiment"]
    assert set(table["model.product_weight"]) == {"0.1", "10"}
    fan = row(table, **{"model.product_weight": "10"}, machine="fan", section="03", domain="source", metric="auc")
    assert fan["experiment"] == "two_bce/fan" and fan["mean"] == pytest.approx(0.61) and fan["n"] == 1
    assert np.isnan(fan["std"])  # one seed
    two_bce = row(table, **{"model.product_weight": "0.1"}, machine="valve", section="03", metric="two_bce_hmean")
    assert two_bce["mean"] == pytest.approx(hm(0.62, 0.5))
    overall = row(table, **{"model.product_weight": "0.1"}, machine="all", metric="two_bce_hmean")
    assert overall["experiment"] == "" and overall["mean"] == pytest.approx(hm(0.6, 0.5, 0.62, 0.5))


def test_asd_report_names_missing_and_failed_jobs_instead_of_averaging_fewer(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    fake_multirun(sweep, ["experiment=ae_baseline", "data.machine_types=[fan],[valve]", "seed=1,2"])
    jobs = [["experiment=ae_baseline", f"data.machine_types=[{m}]", f"seed={s}"] for m in ("fan", "valve") for s in (1, 2)]
    fake_run(sweep / "0", jobs[0], 1, rows22("fan", {0: (0.7, 0.6, 0.6)}))
    fake_run(sweep / "1", jobs[1], 2, [])  # started, never scored
    fake_run(sweep / "2", jobs[2], 1, rows22("valve", {0: (0.8, 0.6, 0.6)}))
    fake_run(sweep / "9", ["experiment=ae_baseline", "data.machine_types=[pump]", "seed=1"], 1,
             rows22("pump", {0: (0.5, 0.5, 0.5)}))  # another sweep's leftover in the folder
    (sweep / "1" / "train.log").write_text("Traceback ...\n")
    assert report_main([str(sweep)]) == EXIT_SOME_LEFT_OUT
    err = capsys.readouterr().err
    assert "asd-report: 2 job(s) left out of the table:" in err
    assert f"missing: experiment=ae_baseline data.machine_types=[valve] seed=2 (job #3 has no folder in {sweep})" in err
    assert (f"failed: experiment=ae_baseline data.machine_types=[fan] seed=2 ({sweep / '1'} has no "
            f"submission/scores.json; see {sweep / '1' / 'train.log'})") in err
    table = pd.read_csv(sweep / "results.csv", keep_default_na=False)
    official = table[table["metric"] == "official_score"].set_index("machine")
    assert official.loc["fan", "n"] == 1 and official.loc["valve", "n"] == 1 and "pump" not in official.index
    assert official.loc["all", "n"] == 1  # seed 1 only: seed 2 has no complete set of machine types
    markdown = (sweep / "results.md").read_text()
    assert "### Left out" in markdown and f"{sweep / '9'} is no job of this sweep" in markdown
    # several folders need --out; a folder that is not there is named
    assert report_main([str(sweep / "0"), str(sweep / "2")]) == 2
    assert "say where the table goes with --out" in capsys.readouterr().err
    assert report_main([str(sweep / "0"), str(sweep / "2"), "--out", str(tmp_path / "two")]) == 0
    assert (tmp_path / "two" / "results.md").is_file()
    assert report_main([str(tmp_path / "nowhere")]) == 2
    assert "is neither a run folder nor a multirun folder" in capsys.readouterr().err


# ---------------------------------------------------------------- SLURM and multi-GPU settings
def test_lightning_takes_ddp_ranks_from_slurm_and_the_launcher_preset_matches_them(tmp_path: Path, monkeypatch) -> None:
    import hydra
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    # the trainer sets the process-wide rank (3 here): restore it, or later tests in this process log nothing
    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0))
    env = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_PROCID": "3",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "77",
           "SLURM_NODELIST": "gpu[01-02]"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2",
                 "trainer.precision=32-true", "trainer.sync_batchnorm=false", "logger=none", "callbacks=none"]
    trainer = hydra.utils.instantiate(compose_train(overrides, tmp_path).trainer)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    # what fit() runs first: SLURM started the processes, so the launcher only checks the settings
    assert trainer.strategy.launcher.launch(lambda: "fit") == "fit"
    trainer = hydra.utils.instantiate(compose_train([*overrides, "trainer.devices=4"], tmp_path).trainer)
    with pytest.raises(ValueError, match=r"devices=4.*ntasks-per-node=2"):  # why tasks_per_node follows devices
        trainer.strategy.launcher.launch(lambda: "fit")


def test_the_slurm_preset_writes_the_sbatch_options_a_cluster_user_sets(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.utils import instantiate

    from asd_lightning.train import config_dir

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)  # submitit looks for srun before it writes anything
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train.yaml", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=asd",
            "trainer=ddp", "trainer.devices=4", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.job.name=train"])
    captured = {}

    def map_array(executor, function, *args):  # instead of sbatch: keep the executor, answer each job
        captured["executor"] = executor

        class Job:
            def results(self):
                return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)]
        return [Job() for _ in args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert len(launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)) == 2
    sbatch = captured["executor"]._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ["--partition=gpu", "--account=asd", "--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=1",
                 "--cpus-per-task=8", "--mem=64GB", "--time=1440", "--signal=USR2@120", "--requeue",
                 f"--output={tmp_path / 'sweep'}/.submitit/%j/%j_0_log.out"]:
        assert f"#SBATCH {line}\n" in sbatch, line
    assert captured["executor"]._executor.parameters["array_parallelism"] == 32


# ---------------------------------------------------------------- real sweeps (child processes)
def the_sweep(cwd: Path) -> Path:
    sweeps = list((cwd / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps  # the restarted jobs wrote into the same timestamped folder
    return sweeps[0]


def job_folders(sweep: Path) -> dict[tuple[str, int], Path]:
    """(machine type, seed) → job folder."""
    out = {}
    for folder in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
        out[(config.data.machine_types[0], config.seed)] = folder
    return out


@pytest.fixture(scope="module")
def basic_sweep(tiny_synthetic, tmp_path_factory) -> dict:
    """``asd-train -m`` over 2 machine types x 2 seeds with W&B offline, stopped by SIGTERM in its
    third job (valve, seed 1) after one epoch, then resumed with the command it printed."""
    cwd = tmp_path_factory.mktemp("basic")
    stop = ["+callbacks.stop._target_=pause_callback.TerminateAt", "+callbacks.stop.epoch=1",
            "+callbacks.stop.batch=0", f"+callbacks.stop.marker={cwd / 'stopped'}", "+callbacks.stop.skip=2"]
    code, _, err = finish(asd_train(["-m", *tiny_synthetic, "data.machine_types=[fan],[valve]", "seed=1,2",
                                     "logger=wandb", *stop], cwd))
    assert code == EXIT_INTERRUPTED, err[-3000:]
    resume = err.split("or resume the whole multirun", 1)[1].split("with:\n", 1)[1].splitlines()[0].strip()
    result = subprocess.run(["bash", "-c", resume], env=child_env(cwd), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"cwd": cwd, "sweep": the_sweep(cwd), "first_err": err, "resume": resume, "out": result.stdout}


@pytest.mark.slow
def test_a_multirun_stopped_by_sigterm_resumes_every_job_in_its_own_folder(basic_sweep) -> None:
    sweep, jobs = basic_sweep["sweep"], job_folders(basic_sweep["sweep"])
    assert sorted(jobs) == [("fan", 1), ("fan", 2), ("valve", 1), ("valve", 2)]
    assert f"hydra.sweep.dir={sweep} ckpt_path=last" in basic_sweep["resume"] and " -m " in basic_sweep["resume"]
    assert "'data.machine_types=[fan],[valve]' seed=1,2" in basic_sweep["resume"]
    logs = {key: (folder / "train.log").read_text() for key, folder in jobs.items()}
    stopped = jobs[("valve", 1)]
    assert f"resuming from {stopped / 'checkpoints' / 'last.ckpt'}" in logs[("valve", 1)]  # from epoch 0's end
    assert f"resuming from {jobs[('fan', 1)] / 'checkpoints' / 'last.ckpt'}" in logs[("fan", 1)]  # finished: test again
    assert "starting from scratch" in logs[("valve", 2)] and "resuming" not in logs[("valve", 2)]


@pytest.mark.slow
def test_the_multirun_ends_with_one_table_of_all_its_jobs(basic_sweep) -> None:
    sweep, jobs = basic_sweep["sweep"], job_folders(basic_sweep["sweep"])
    assert f"Results of {sweep} (also in {sweep / 'results.csv'} and {sweep / 'results.md'})" in basic_sweep["out"]
    assert "### Official score per machine type and overall (%)" in basic_sweep["out"]
    table = pd.read_csv(sweep / "results.csv", keep_default_na=False, dtype={"section": str})
    reports = {key: ScoreReport.load(folder / "submission" / "scores.json") for key, folder in jobs.items()}
    for (machine, seed), report in reports.items():
        assert row(table, machine=machine, section="all", metric="official_score")[f"seed={seed}"] == \
            pytest.approx(report.official_score)
        section = report.rows.iloc[0]
        assert row(table, machine=machine, section=f"{int(section['section']):02d}", metric="pauc")[f"seed={seed}"] \
            == pytest.approx(section["pauc"])
    for seed in (1, 2):  # the overall score pools both machine types' sections, as one submission
        values = np.concatenate([reports[(m, seed)].rows[["auc_source", "auc_target", "pauc"]].to_numpy().ravel()
                                 for m in ("fan", "valve")])
        assert row(table, machine="all", metric="official_score")[f"seed={seed}"] == \
            pytest.approx(hm(*np.maximum(values, np.finfo(float).eps)))
    assert set(table["n"]) == {2}


@pytest.mark.slow
def test_wandb_runs_of_a_sweep_share_its_group_and_carry_names_config_and_scores(basic_sweep) -> None:
    sweep, jobs = basic_sweep["sweep"], job_folders(basic_sweep["sweep"])
    for (machine, seed), folder in jobs.items():
        run = offline_run(sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))[-1])  # the resumed one last
        assert (run["group"], run["job_type"], run["name"]) == (sweep.name, machine, f"{machine}-seed{seed}")
        assert run["config"]["data"]["machine_types"] == [machine] and run["config"]["seed"] == seed
        assert run["config"]["model"]["optimizer"]["lr"] == 0.001  # the full resolved config
        report = ScoreReport.load(folder / "submission" / "scores.json")
        assert run["summary"]["test/official_score"] == pytest.approx(report.official_score)
        assert f"test/{machine}/section_00/auc_source" in run["summary"]
    results = offline_run(next(sweep.glob("wandb/offline-run-*/run-*.wandb")))
    assert (results["group"], results["job_type"]) == (sweep.name, "results")
    assert results["summary"]["results/_type"] == "table-file"
    assert results["summary"]["results/nrows"] == len(pd.read_csv(sweep / "results.csv"))


@pytest.mark.slow
def test_submitit_local_requeues_a_preempted_job_in_its_folder_and_gives_the_same_table(
        tiny_synthetic, basic_sweep, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    marker = tmp_path / "paused"
    pause = ["+callbacks.pause._target_=pause_callback.PauseAt", "+callbacks.pause.epoch=1",
             "+callbacks.pause.batch=0", f"+callbacks.pause.marker={marker}"]
    sweep = asd_train(["-m", "hydra/launcher=submitit_local", *tiny_synthetic, "data.machine_types=[fan]", "seed=1,2",
                       "logger=csv", "ckpt_path=last", *pause], tmp_path)
    end = time.monotonic() + 300
    while not marker.exists():
        assert sweep.poll() is None and time.monotonic() < end, sweep.communicate()[1][-3000:]
        time.sleep(0.1)
    os.kill(int(marker.read_text()), signal.SIGUSR2)  # what SLURM sends before a time limit / preemption
    code, _, err = finish(sweep)
    assert code == 0, err[-3000:]
    folder = the_sweep(tmp_path)  # the default, timestamped sweep folder: kept by the requeued job
    resumed = [f for f in job_folders(folder).values() if "resuming from" in (f / "train.log").read_text()]
    assert len(resumed) == 1
    assert f"resuming from {resumed[0] / 'checkpoints' / 'last.ckpt'}" in (resumed[0] / "train.log").read_text()
    assert any("this job is preempted" in p.read_text() for p in folder.glob(".submitit/*/*_log.err"))
    ours = pd.read_csv(folder / "results.csv", keep_default_na=False, dtype={"section": str})
    basic = pd.read_csv(basic_sweep["sweep"] / "results.csv", keep_default_na=False, dtype={"section": str})
    assert len(ours) == 12  # fan: 2 sections x 5 metrics, its official score, and overall (fan alone here)
    pd.testing.assert_frame_equal(ours[ours["machine"] == "fan"], basic[basic["machine"] == "fan"].reset_index(drop=True),
                                  check_exact=False)
