"""The per-machine-type hyperparameter search (``asd-train -m hparams_search=...``): search
spaces, the hparams_search configs, stale trials of dead workers, exported experiment configs,
a real 3-trial search on two machine types whose worker is killed and resumed, and a 2-trial
search whose best trial is re-run (``final=rerun``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from asd_lightning.metrics.official import ScoreReport
from asd_lightning.sweeps.export import tuned_config, write_tuned_config
from asd_lightning.sweeps.space import parse_space
from asd_lightning.train import config_dir, train
from conftest import asd_train, finish
from test_train import compose_train

optuna = pytest.importorskip("optuna")
CONF = Path(config_dir())
SEARCHES = {"ae_baseline": "ae_baseline", "two_bce": "two_bce", "two_bce_lof": "two_bce",
            "dgmix_finetune": "dgmix_finetune", "genrep": "genrep",
            "encoder_lora": "encoder_lora"}  # hparams_search → the experiment it searches from


def test_search_spaces_in_hydra_sweep_syntax_become_optuna_distributions() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions, fixed = parse_space({
        "model.optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "data.batch_size": "choice(32, 64, 128)",
        "callbacks.inlier.model.n_components": "range(1, 9)", "k": "range(2, 10, 3)", "alpha": "interval(0.1, 0.9)",
        "callbacks/inlier_model@callbacks.inlier.model": "lof", "callbacks.inlier.aggregation": "mean"})
    assert distributions == {
        "model.optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "data.batch_size": CategoricalDistribution((32, 64, 128)),
        "callbacks.inlier.model.n_components": IntDistribution(1, 8),  # range's end excluded
        "k": IntDistribution(2, 8, step=3), "alpha": FloatDistribution(0.1, 0.9)}
    assert fixed == {"callbacks/inlier_model@callbacks.inlier.model": "lof", "callbacks.inlier.aggregation": "mean"}
    with pytest.raises(ValueError, match="range\\(\\) of floats"):
        parse_space({"x": "range(0.1, 1.0, 0.1)"})


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_every_search_composes_and_its_parameters_are_keys_of_its_experiment(name: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    assert name in SEARCHES, f"add hparams_search/{name} with its experiment to SEARCHES"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"hparams_search={name}", f"experiment={SEARCHES[name]}"],
                      return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.asd_lightning_search.PerMachineOptunaSweeper" and sweeper.method == name
    distributions, fixed = parse_space(OmegaConf.to_container(sweeper.params))
    assert distributions, "a search needs a search space"
    sample = {key: (d.choices[-1] if hasattr(d, "choices") else d.high) for key, d in distributions.items()}
    for overrides in (sweeper.tune_overrides, sweeper.report_overrides):  # every value lands on an existing key
        trial = compose_train([f"experiment={SEARCHES[name]}", *overrides, *[f"{k}={v}" for k, v in fixed.items()],
                               *[f"{k}={v}" for k, v in sample.items()]], tmp_path)
        for key, value in sample.items():
            assert OmegaConf.select(trial, key) == value, key
    tuning = compose_train([f"experiment={SEARCHES[name]}", *sweeper.tune_overrides], tmp_path)
    report = compose_train([f"experiment={SEARCHES[name]}", *sweeper.report_overrides], tmp_path)
    assert set(tuning.data.test_sections).isdisjoint(report.data.test_sections)  # held-out sections
    if cfg.optimized_metric.startswith("test/two_bce/"):
        assert tuning.score_protocol == report.score_protocol == "two_bce"


def test_trials_of_a_dead_worker_run_again_in_their_folders_and_live_ones_are_left_alone(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from asd_lightning.sweeps.search import HEARTBEAT, STALE, WORKER, recover_stale, trials_to_ask

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(study_name="s-fan", storage=storage, direction="maximize")
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    done = study.ask(space)
    study.tell(done, 0.5)
    dead = study.ask(space)  # this host, a process that is gone
    dead.set_user_attr("folder", "fan/trial_001")
    storage.set_trial_system_attr(dead._trial_id, WORKER, f"{os.uname().nodename}:999999999")
    silent = study.ask(space)  # another host, no heartbeat for an hour
    storage.set_trial_system_attr(silent._trial_id, WORKER, "elsewhere:1")
    storage.set_trial_system_attr(silent._trial_id, HEARTBEAT, time.time() - 3600)
    alive = study.ask(space)  # another host, beating
    storage.set_trial_system_attr(alive._trial_id, WORKER, "elsewhere:2")
    storage.set_trial_system_attr(alive._trial_id, HEARTBEAT, time.time())
    assert trials_to_ask(study, n_trials=6, n_jobs=10) == 2  # 6 - 1 complete - 3 running
    assert recover_stale(study, storage, stale_after_s=600) == 2
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.FAIL, 3: TrialState.RUNNING,
                      4: TrialState.WAITING, 5: TrialState.WAITING}
    assert study.trials[1].system_attrs[STALE] and study.trials[4].params == {} and \
        study.trials[4].system_attrs["fixed_params"] == dead.params
    retry = study.ask(space)  # the queued retry: same parameters, same folder
    assert retry.number == 4 and retry.params == dead.params and retry.user_attrs["folder"] == "fan/trial_001"
    assert trials_to_ask(study, n_trials=6, n_jobs=10) == 3  # 1 complete, 2 running; stale failures are no failures
    assert recover_stale(study, storage, stale_after_s=600) == 0


def test_an_exported_config_leaves_out_how_the_final_job_ran_and_where() -> None:
    from asd_lightning.sweeps.search import method_overrides

    final = ["experiment=two_bce", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trial=7", "train=false",
             "ckpt_path=/runs/fan/trial_007/last.ckpt", "++callbacks.model_checkpoint=null", "model.optimizer.lr=0.001",
             "hydra.sweep.subdir=fan/best"]
    assert method_overrides(final) == ["experiment=two_bce", "model.optimizer.lr=0.001"]


def test_an_exported_config_switches_groups_and_sets_values_on_its_base_experiment(tmp_path: Path) -> None:
    text = tuned_config(
        ["experiment=two_bce", "data.machine_types=[ToyCar]", "data.root=/data/dcase2021", "trainer=gpu",
         "protocol=two_bce_dcase2021", "callbacks/inlier_model@callbacks.inlier.model=lof",
         "callbacks.inlier.aggregation=mean", "callbacks.inlier.model.n_neighbors=8", "model.optimizer.lr=0.0005"],
        groups=["experiment", "protocol", "trainer", "data", "callbacks/inlier_model@callbacks.inlier.model"],
        exclude=["data.root", "trainer"], header=["best of 20 trials"])
    assert text.startswith("# @package _global_\n# best of 20 trials\n"
                           "# The search also ran with (not part of this config): data.root=/data/dcase2021 trainer=gpu\n")
    write_tuned_config(tmp_path / "conf" / "experiment" / "tuned" / "two_bce_lof" / "ToyCar.yaml", text)
    cfg = compose_train(["experiment=tuned/two_bce_lof/ToyCar", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"],
                        tmp_path)
    assert cfg.callbacks.inlier.model._target_.endswith("LOFInlier") and cfg.callbacks.inlier.model.n_neighbors == 8
    assert (list(cfg.data.machine_types), cfg.model.optimizer.lr, cfg.callbacks.inlier.aggregation) == \
        (["ToyCar"], 0.0005, "mean")
    assert list(cfg.data.test_sections) == [3, 4, 5] and cfg.trainer.accelerator == "auto"


@pytest.mark.slow
def test_a_search_per_machine_type_survives_a_killed_worker_and_exports_configs_that_rerun_it(
        tiny_synthetic, tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    sweep, marker, conf = tmp_path / "search", tmp_path / "paused", tmp_path / "conf"
    exclude = OmegaConf.load(CONF / "hydra" / "sweeper" / "per_machine_optuna.yaml").export_exclude
    command = ["-m", "hparams_search=ae_baseline", *tiny_synthetic, "data.machine_types=[fan],[valve]", "logger=csv",
               f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0",
               "hydra.sweeper.tune_overrides=['data.test_sections=[0]']",
               "hydra.sweeper.report_overrides=['data.test_sections=[1]']",
               f"hydra.sweeper.export_dir={conf / 'experiment' / 'tuned'}",
               "hydra.sweeper.export_exclude=[" + ",".join(f"'{p}'" for p in [*exclude, "callbacks.pause*"]) + "]",
               "+callbacks.pause._target_=pause_callback.PauseAt", "+callbacks.pause.epoch=1",
               "+callbacks.pause.batch=0", f"+callbacks.pause.marker={marker}", "+callbacks.pause.skip=2"]
    worker = asd_train(command, tmp_path)  # trials 0 of fan and valve finish; fan's trial 1 is held
    end = time.monotonic() + 400
    while not marker.exists():
        assert worker.poll() is None and time.monotonic() < end, worker.communicate()[1][-3000:]
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)  # the worker dies with fan's trial 1 in its second epoch
    worker.wait()
    code, out, err = finish(asd_train(command, tmp_path))  # the same command continues the studies
    assert code == 0, err[-3000:]

    storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    assert sorted(optuna.get_all_study_names(storage)) == ["ae_baseline-fan", "ae_baseline-valve"]
    for machine in ("fan", "valve"):
        trials = optuna.load_study(study_name=f"ae_baseline-{machine}", storage=storage).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
        assert trials[2].params == trials[1].params  # the killed trial again, in its own folder
        assert trials[2].user_attrs["folder"] == trials[1].user_attrs["folder"] == f"{machine}/trial_001"
    fan = sweep / "fan"
    assert f"resuming from {fan / 'trial_001' / 'checkpoints' / 'last.ckpt'}" in (fan / "trial_001" / "train.log").read_text()
    assert [p.name for p in (fan / "trial_000" / "csv").iterdir()] == ["version_0"]  # stored trials never ran again
    assert ScoreReport.load(fan / "trial_000" / "submission" / "scores.json").rows["section"].tolist() == [0]

    for machine in ("fan", "valve"):
        best = json.loads((sweep / machine / "best.json").read_text())
        study = optuna.load_study(study_name=f"ae_baseline-{machine}", storage=storage)
        assert best["trial"] == study.best_trial.number and best["tuning_value"] == study.best_value
        held_out = ScoreReport.load(sweep / machine / "best" / "submission" / "scores.json")
        assert held_out.rows["section"].tolist() == [1]  # never the section the search looked at
        assert best["heldout_value"] == pytest.approx(held_out.official_score)
        assert f"{machine} | official score" in (sweep / "results.md").read_text()
    # the exported best config of fan composes and, run again, gives the reported held-out score
    fan_best = json.loads((fan / "best.json").read_text())
    cfg = compose_train(["experiment=tuned/ae_baseline/fan", f"hydra.searchpath=[file://{conf}]",
                         *[o for o in tiny_synthetic if o.split("=")[0] in ("data.root", "data.cache_dir",
                                                                            "data.num_workers", "trainer.accelerator")],
                         "logger=csv", "data.progress=false"], tmp_path / "rerun")
    assert cfg.model.optimizer.lr == pytest.approx(fan_best["params"]["model.optimizer.lr"])
    assert (list(cfg.data.machine_types), list(cfg.data.test_sections), cfg.trainer.max_epochs) == (["fan"], [1], 2)
    assert "pause" not in cfg.callbacks
    assert train(cfg)["test/official_score"] == pytest.approx(fan_best["heldout_value"], abs=1e-6)
    valve = compose_train(["experiment=tuned/ae_baseline/valve", f"hydra.searchpath=[file://{conf}]"], tmp_path)
    assert list(valve.data.machine_types) == ["valve"]


@pytest.mark.slow
def test_final_rerun_trains_the_best_trial_again_and_the_export_holds_the_studys_best_parameters(
        tiny_synthetic, tmp_path: Path) -> None:
    """``final=rerun``: the best trial is trained again (same parameters, same seed, same training
    clips: the same weights, to the bit) and tested on the held-out section; ``best.json`` and
    the exported config hold exactly the study's best trial's parameters. Breaks caught (each
    tried): the final job run without the best parameters, a rerun that does not train (the
    rescore branch taken), ``best.json`` with another trial's parameters, an export that leaves a
    best parameter out."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sweep, conf = tmp_path / "search", tmp_path / "conf"
    command = ["-m", "hparams_search=ae_baseline", *tiny_synthetic, "trainer.max_epochs=1", "data.machine_types=[fan]",
               "logger=csv", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1",
               "hydra.sweeper.final=rerun", "hydra.sweeper.tune_overrides=['data.test_sections=[0]']",
               "hydra.sweeper.report_overrides=['data.test_sections=[1]']",
               f"hydra.sweeper.export_dir={conf / 'experiment' / 'tuned'}"]
    code, _, err = finish(asd_train(command, tmp_path))
    assert code == 0, err[-3000:]

    storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    study = optuna.load_study(study_name="ae_baseline-fan", storage=storage)
    best, record = study.best_trial, json.loads((sweep / "fan" / "best.json").read_text())
    assert len(study.trials) == 2 and study.trials[0].params != study.trials[1].params
    assert (record["trial"], record["params"], record["tuning_value"]) == (best.number, best.params, best.value)

    rerun = sweep / "fan" / "best"
    weights = [torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
               for folder in (sweep / best.user_attrs["folder"], rerun)]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    held_out = ScoreReport.load(rerun / "submission" / "scores.json")
    assert held_out.rows["section"].tolist() == [1]
    assert record["heldout_value"] == pytest.approx(held_out.official_score)

    exported = compose_train(["experiment=tuned/ae_baseline/fan", f"hydra.searchpath=[file://{conf}]"], tmp_path / "x")
    assert {key: OmegaConf.select(exported, key) for key in best.params} == best.params
