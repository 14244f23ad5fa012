"""Reliability, as a demanding user meets it: interrupted runs resume exactly, preemption is
never a silent success, bad inputs fail early with one line naming the file and the Hydra
override, and asd-score / asd-evaluate handle bad files and folders.

Training runs here are real child processes (``python -m asd_lightning.train``) on a tiny
DCASE folder, killed or signalled at a known batch by the test-only ``PauseAt`` callback.
Concurrent cache builds (one decode, one cache) are tested in ``test_decode_cache``, bad score
CSVs in ``test_evaluate_cli``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from asd_lightning import preflight
from asd_lightning.callbacks.checkpointing import rng_states, set_rng_states
from asd_lightning.data import audio_cache
from asd_lightning.data.audio_cache import AudioCache
from asd_lightning.data.clip_index import ClipIndexError
from asd_lightning.data.decode import AudioDecodeError
from asd_lightning.deploy.cli import EXIT_SOME_FAILED, format_table
from asd_lightning.deploy.cli import main as score_main
from asd_lightning.metrics import write_submission
from asd_lightning.metrics.cli import main as evaluate_main
from asd_lightning.train import train
from asd_lightning.utils.resume import EXIT_INTERRUPTED
from conftest import make_2022, write_wav
from test_train import compose_train, local_copy

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["experiment=ae_baseline", "data.machine_types=[fan]", "data.num_workers=0", "logger=csv",
            "trainer.accelerator=cpu", "trainer.max_epochs=4", "data.batch_size=4", "data.progress=false",
            "+trainer.enable_progress_bar=false"]


# ---------------------------------------------------------------- child training runs
def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), WANDB_MODE="offline")


def start(overrides: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "asd_lightning.train", *overrides], cwd=cwd, env=env or child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def pause_at(epoch: int, batch: int, marker: Path) -> list[str]:
    return ["+callbacks.pause._target_=pause_callback.PauseAt", f"+callbacks.pause.epoch={epoch}",
            f"+callbacks.pause.batch={batch}", f"+callbacks.pause.marker={marker}"]


def wait_for(marker: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before pausing:\n{process.communicate()[1][-3000:]}")
        if time.monotonic() > end:
            process.kill()
            raise AssertionError("the run did not reach the pause")
        time.sleep(0.05)


def outputs(run: Path) -> dict[str, bytes]:
    """Every submission CSV, the decision thresholds, the clip scores and the score table of a run."""
    files = sorted((run / "submission").glob("*.csv")) + sorted((run / "submission").glob("*.json"))
    return {f.name: f.read_bytes() for f in files}


def copy_of(root: Path, tmp_path: Path, machines: str) -> list[str]:
    """Overrides that read a tiny DCASE folder without ground truth (see ``local_copy``)."""
    return [o for o in local_copy(root, tmp_path, machines) if not o.startswith("data.ground_truth")] + \
        ["data.progress=false"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> list[str]:
    base = tmp_path_factory.mktemp("resume")
    root = make_2022(base / "data", machines=("fan",), sections=(0, 1), n_train=6, n_test=2, seconds=2.5)
    return [f"data.root={root}", f"data.cache_dir={base / 'cache'}"]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> Path:
    """An uninterrupted run; ``ckpt_path=last`` in a new folder is a fresh start."""
    run = tmp_path_factory.mktemp("reference") / "run"
    code, _, err = finish(start([*TINY_RUN, *tiny_data, f"hydra.run.dir={run}", "ckpt_path=last"], run.parent))
    assert code == 0, err[-3000:]
    # 2 sections x (anomaly_score, decision_result), thresholds, clip_scores.csv, scores.csv/json, data.json
    assert len(outputs(run)) == 9
    return run


# ---------------------------------------------------------------- 1. last.ckpt and exact resume
def test_last_ckpt_is_the_end_of_every_epoch_whatever_the_monitor_does(tmp_path: Path) -> None:
    """Lightning 2.6's save_last rewrites last.ckpt only with a new best; ours after every epoch."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from asd_lightning.callbacks.checkpointing import ModelCheckpoint

    class WorseEveryEpoch(BoringModel):  # the monitored value only gets worse: epoch 0 stays the best
        def on_validation_epoch_end(self) -> None:
            self.log("score", float(self.current_epoch))

    def last_epoch(checkpoint_class, folder: Path, **trainer_settings) -> tuple[int, str]:
        callback = checkpoint_class(dirpath=folder, monitor="score", mode="min", save_last=True)
        trainer = L.Trainer(max_epochs=4, callbacks=[callback], logger=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_train_batches=2, limit_val_batches=1,
                            **trainer_settings)
        trainer.fit(WorseEveryEpoch())
        return torch.load(folder / "last.ckpt", weights_only=False)["epoch"], Path(callback.best_model_path).name

    assert last_epoch(LightningModelCheckpoint, tmp_path / "lightning")[0] == 0  # the defect this fixes
    assert last_epoch(ModelCheckpoint, tmp_path / "ours") == (3, "epoch=0-step=2.ckpt")
    # epochs without validation write it too
    assert last_epoch(ModelCheckpoint, tmp_path / "every2", check_val_every_n_epoch=2)[0] == 3


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save({"rng": rng_states()}, tmp_path / "states.pt")
    expected = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_states(torch.load(tmp_path / "states.pt", weights_only=True)["rng"])
    drawn = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(drawn[0], expected[0]) and np.array_equal(drawn[1], expected[1]) and drawn[2] == expected[2]


def test_rng_states_are_restored_when_fitting_resumes_not_when_testing(tmp_path: Path) -> None:
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from asd_lightning.callbacks.checkpointing import RNGState

    def trainer(epochs: int) -> L.Trainer:
        return L.Trainer(max_epochs=epochs, callbacks=[RNGState()], default_root_dir=tmp_path, logger=False,
                         enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2,
                         limit_val_batches=1, limit_test_batches=1)

    first = trainer(1)
    first.fit(BoringModel())
    first.save_checkpoint(tmp_path / "saved.ckpt")
    saved = torch.load(tmp_path / "saved.ckpt", weights_only=False)["callbacks"]["RNGState"]["rng"]["numpy"][1]
    np.random.seed(5)
    trainer(1).test(BoringModel(), ckpt_path=tmp_path / "saved.ckpt")
    assert np.array_equal(np.random.get_state()[1], np.random.RandomState(5).get_state()[1])  # untouched
    trainer(1).fit(BoringModel(), ckpt_path=tmp_path / "saved.ckpt")  # nothing left to train: only the restore
    assert np.array_equal(np.random.get_state()[1], saved.numpy().astype(np.uint32))


def test_sigkill_mid_epoch_then_the_same_command_resumes_exactly(tiny_data, reference, tmp_path: Path) -> None:
    run, marker = tmp_path / "run", tmp_path / "paused"
    command = [*TINY_RUN, *tiny_data, f"hydra.run.dir={run}", "ckpt_path=last"]
    process = start(command + pause_at(epoch=2, batch=1, marker=marker), tmp_path)
    wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["epoch"] == 1  # the end of the last finished epoch; epoch 2 was cut after its second batch
    code, out, err = finish(start(command, tmp_path))  # a requeued job runs the same command again
    assert code == 0, err[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in out + err
    # the same scores, decisions, thresholds and table, to the byte, as the uninterrupted run
    assert outputs(run) == outputs(reference)


def test_the_same_seed_twice_gives_identical_submissions(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=6, n_test=2, seconds=2.5)
    for run in ("a", "b"):
        train(compose_train(["experiment=ae_baseline", "trainer.max_epochs=2", "data.batch_size=4",
                             *[o for o in local_copy(root, tmp_path, "fan") if not o.startswith("data.ground_truth")]],
                            tmp_path / run))
    assert len(outputs(tmp_path / "a")) == 7 and outputs(tmp_path / "a") == outputs(tmp_path / "b")


# ---------------------------------------------------------------- 2. SIGTERM
def test_sigterm_exits_143_says_how_to_resume_and_that_command_resumes_exactly(tiny_data, reference,
                                                                                tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    process = start([*TINY_RUN, *tiny_data, *pause_at(epoch=1, batch=1, marker=marker)], tmp_path)  # a default run folder
    wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == EXIT_INTERRUPTED == 143, err[-3000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1 and not (runs[0] / "submission").exists()  # no scores: not a success
    last = runs[0] / "checkpoints" / "last.ckpt"
    assert f"asd-train: interrupted by SIGTERM; {last} holds the end of epoch 0, so training resumes at epoch 1." in err
    resume = err.split("with:\n", 1)[1].splitlines()[0].strip()
    assert resume.startswith(f"cd {tmp_path} && ") and resume.endswith(f"hydra.run.dir={runs[0]} ckpt_path=last")
    result = subprocess.run(["bash", "-c", resume], env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert outputs(runs[0]) == outputs(reference)


def test_sigterm_in_a_run_started_from_python_reports_too(tmp_path: Path, capsys) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=6, n_test=2, seconds=2.5)
    cfg = compose_train(["experiment=ae_baseline", "trainer.max_epochs=3", "data.batch_size=2",
                         "+callbacks.stop._target_=pause_callback.TerminateAt", "+callbacks.stop.epoch=1",
                         "+callbacks.stop.batch=0", *copy_of(root, tmp_path, "fan")], tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == EXIT_INTERRUPTED
    assert (f"interrupted by SIGTERM; {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'} holds the end of epoch 0, "
            "so training resumes at epoch 1.") in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Lightning put the default handler back


@pytest.mark.slow
def test_under_slurm_the_requeue_signal_requeues_and_the_requeued_job_resumes_exactly(tiny_data, reference,
                                                                                      tmp_path: Path) -> None:
    calls = tmp_path / "scontrol_calls"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    env = dict(child_env(), PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", SLURM_NTASKS="1",
               SLURM_JOB_ID="4242", SLURM_JOB_NAME="asd", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
               SLURM_NODELIST="localhost")
    run, marker = tmp_path / "slurm-4242", tmp_path / "paused"  # the sbatch line: hydra.run.dir=.../slurm-$SLURM_JOB_ID
    command = [*TINY_RUN, *tiny_data, f"hydra.run.dir={run}", "ckpt_path=last"]
    job = start(command + pause_at(epoch=1, batch=1, marker=marker), tmp_path, env)
    wait_for(marker, job)
    job.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=SIGUSR1@90` sends before the time limit
    end = time.monotonic() + 120
    while not calls.exists():
        assert job.poll() is None and time.monotonic() < end
        time.sleep(0.05)
    assert calls.read_text().split() == ["requeue", "4242"]  # Lightning requeued the job
    job.send_signal(signal.SIGTERM)  # SLURM then stops it
    code, _, err = finish(job)
    assert code == EXIT_INTERRUPTED and f"{run / 'checkpoints' / 'last.ckpt'} holds the end of epoch 0" in err
    code, _, err = finish(start(command, tmp_path, env))  # the requeued job: the same command
    assert code == 0, err[-3000:]
    assert outputs(run) == outputs(reference)


# ---------------------------------------------------------------- 3. pre-flight, before the first epoch
def test_clips_shorter_than_one_test_window_fail_before_training_naming_the_shortest(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=4, n_test=1, seconds=3.0)
    short = root / "dev_data" / "fan" / "test" / "section_00_source_test_normal_0000_a_0_b_0.wav"
    write_wav(short, seconds=2.0)  # 63 frames: one fewer than a 64-frame window
    cfg = compose_train(["experiment=mobilenetv2_baseline", "callbacks=inlier", "trainer.max_epochs=1",
                         *copy_of(root, tmp_path, "fan")],
                        tmp_path / "run")
    with pytest.raises(preflight.PreflightError) as error:
        train(cfg)
    assert str(error.value).startswith(
        "1 clip(s) are shorter than one test window of 64 frames (hop 512 samples), which needs 32256 samples "
        f"(2.016 s); the shortest is {short} with 32000 samples (2.000 s).")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "csv").exists()


def test_training_clips_shorter_than_the_crop_are_reported(tmp_path: Path, caplog) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=6, n_test=1, seconds=2.5)
    short = root / "dev_data" / "fan" / "train" / "section_00_source_train_normal_0003_a_0_b_0.wav"
    write_wav(short, seconds=1.0)
    cfg = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "fan")], tmp_path / "run")
    with caplog.at_level("WARNING", logger="asd_lightning.preflight"):
        preflight.check_run(cfg, hydra.utils.instantiate(cfg.data), [])
    assert "training clip(s) are shorter than the training crop of 32256 samples (2.016 s); their crops repeat " \
           f"the clip. The shortest: {short} (16000 samples)" in caplog.text


def test_an_unwritable_output_folder_fails_first_and_leaves_nothing(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=2, n_test=1)
    (tmp_path / "a_file").write_text("")
    cfg = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "fan"),
                         f"callbacks.official_scores.output_dir={tmp_path / 'a_file' / 'submission'}"], tmp_path / "run")
    with pytest.raises(preflight.PreflightError, match=r"cannot write to .*a_file/submission \(Not a directory\); "
                                                       r"set callbacks.official_scores.output_dir=<a writable folder>"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # the checks removed the folders they created
    assert not (tmp_path / "cache").exists()  # failed before decoding anything


def test_too_little_disk_for_the_cache_fails_before_decoding(tmp_path: Path, monkeypatch) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=2, n_test=1)
    monkeypatch.setattr(audio_cache.shutil, "disk_usage", lambda path: audio_cache.shutil._ntuple_diskusage(1, 1, 100))
    cfg = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "fan")], tmp_path / "run")
    with pytest.raises(audio_cache.CacheSpaceError, match=r"the decoded cache of 'fan' needs 0.2 MB, only 0.0 MB are "
                                                          r"free there .*ASD_CACHE_DIR=<folder>"):
        train(cfg)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("bad, message", [
    ("empty", "file is empty (0 bytes)"),
    ("truncated", "truncated WAV file: header promises"),
    ("not_audio", "cannot be read as audio"),
    ("stereo", "has 2 channels, expected mono (set data.decode.channel=first to use its first channel)"),
    ("rate", "sample rate is 44100 Hz, expected 16000 Hz (set data.decode.resample=true to convert it)"),
    ("depth", "sample format is PCM_24, expected 16-bit PCM (set data.decode.requantize=true to convert it)"),
    ("name", "file name does not match the DCASE 2022 layout for folder 'train/' "
             "(set data.on_unmatched=warn to skip such files)"),
])
def test_a_bad_file_fails_before_training_naming_it_and_the_override(bad: str, message: str, tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=2, n_test=1)
    train_dir = root / "dev_data" / "fan" / "train"
    path = train_dir / ("notes_copy.wav" if bad == "name" else "section_00_source_train_normal_0009_a_0_b_0.wav")
    if bad == "empty":
        path.write_bytes(b"")
    elif bad == "not_audio":
        path.write_bytes(b"this is not audio" * 40)
    elif bad == "truncated":
        write_wav(path)
        path.write_bytes(path.read_bytes()[:3000])
    else:
        write_wav(path, channels=2 if bad == "stereo" else 1, sr=44100 if bad == "rate" else 16000,
                  subtype="PCM_24" if bad == "depth" else "PCM_16")
    extra = ["data.decode.channel=error"] if bad == "stereo" else []
    cfg = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "fan"), *extra], tmp_path / "run")
    with pytest.raises((AudioDecodeError, ClipIndexError)) as error:
        train(cfg)
    assert str(error.value) == f"{path}: {message}" or str(error.value).startswith(f"{path}: {message}")
    assert not (tmp_path / "run" / "checkpoints").exists()
    if bad in ("stereo", "rate", "depth", "name"):  # the named override accepts the file
        fix = {"stereo": "data.decode.channel=first", "rate": "data.decode.resample=true",
               "depth": "data.decode.requantize=true", "name": "data.on_unmatched=warn"}[bad]
        cfg = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "fan"), fix], tmp_path / "run2")
        datamodule = hydra.utils.instantiate(cfg.data)
        if bad == "name":
            with pytest.warns(UserWarning, match="notes_copy.wav: file name does not match .*; skipped"):
                preflight.check_run(cfg, datamodule, [])
        else:
            preflight.check_run(cfg, datamodule, [])
        assert (str(path) in set(datamodule.clips["path"])) == (bad != "name")


def test_missing_folders_are_named(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=2, n_test=1)
    cfg = compose_train(["experiment=ae_baseline", *copy_of(tmp_path / "nowhere", tmp_path, "fan")], tmp_path / "r")
    with pytest.raises(ClipIndexError, match=r"dataset root .*nowhere does not exist or is not a folder "
                                             r"\(set data.root=<dataset folder>\)"):
        train(cfg)
    cfg = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "pump")], tmp_path / "r")
    with pytest.raises(ValueError, match=r"machine type\(s\) \['pump'\] not found under .*; found \['fan'\]"):
        train(cfg)


def test_a_stray_file_under_another_machine_type_does_not_block_training(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan", "valve"), sections=(0,), n_train=2, n_test=1)
    write_wav(root / "dev_data" / "valve" / "train" / "notes_copy.wav")
    fan = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "fan")], tmp_path / "fan")
    preflight.check_run(fan, hydra.utils.instantiate(fan.data), [])
    valve = compose_train(["experiment=ae_baseline", *copy_of(root, tmp_path, "valve")], tmp_path / "valve")
    with pytest.raises(ClipIndexError, match="notes_copy.wav: file name does not match"):
        preflight.check_run(valve, hydra.utils.instantiate(valve.data), [])


# ---------------------------------------------------------------- 4. asd-score on a folder of new recordings
def test_asd_score_scores_every_good_file_and_reports_each_bad_one(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "recordings"
    good = [folder / f"section_0{s}_new_{i}.wav" for s, i in ((0, 0), (1, 1), (0, 2))]
    for i, path in enumerate(good):
        write_wav(path, 3.0, seed=i)
    bad = {"section_00_empty.wav": "file is empty", "section_00_short.wav": "too short to score: 16000 samples",
           "section_01_cd.wav": "sample rate is 44100 Hz, expected 16000 Hz (set --resample to convert it)",
           "recording.wav": "no section_XX in the file name; pass --section"}
    (folder / "section_00_empty.wav").write_bytes(b"")
    write_wav(folder / "section_00_short.wav", 1.0)
    write_wav(folder / "section_01_cd.wav", 3.0, sr=44100)
    write_wav(folder / "recording.wav", 3.0)
    code = score_main(["--bundle", str(bundle_dir), str(folder), "--out", str(tmp_path / "scores.csv")])
    captured = capsys.readouterr()
    assert code == EXIT_SOME_FAILED == 3
    table = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    assert len(table) == 7 and sorted(table.loc[table["error"] == "", "file"]) == sorted(map(str, good))
    for name, reason in bad.items():
        assert f"asd-score: {folder / name}: {reason}" in captured.err
        assert reason in table.loc[table["file"] == str(folder / name), "error"].item()
    assert "3 of 7 file(s) of fan scored" in captured.out and "4 of 7 file(s) could not be scored" in captured.err
    assert all(Path(p).name in captured.out for p in map(str, good))


def test_asd_score_prints_tiny_scores_readably() -> None:
    table = pd.DataFrame({"file": ["a.wav"], "section": [0], "score": [3.1234567e-7], "decision": [1], "error": [""]})
    assert "3.12346e-07" in format_table(table) and "anomalous" in format_table(table)


# ---------------------------------------------------------------- 5. smaller defects
def test_a_cache_build_killed_midway_leaves_nothing_after_the_next_build(tmp_path: Path) -> None:
    files = [tmp_path / "wavs" / f"clip_{i}.wav" for i in range(4)]
    for i, path in enumerate(files):
        write_wav(path, 0.2, seed=i)
    slow_build = ("import sys, time; from asd_lightning.data import audio_cache as c; d = c.decode; "
                  "c.decode = lambda *a, **k: (time.sleep(60), d(*a, **k))[1]; "
                  "c.AudioCache.open_or_build(sys.argv[2:], sys.argv[1], name='fan', progress=False)")
    child = subprocess.Popen([sys.executable, "-c", slow_build, str(tmp_path / "cache"), *map(str, files)],
                             env=child_env())
    end = time.monotonic() + 120
    while not list((tmp_path / "cache").glob(".fan-*.tmp-*")):
        assert child.poll() is None and time.monotonic() < end
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = list((tmp_path / "cache").glob(".fan-*.tmp-*"))
    assert len(left) == 1 and f"-{socket.gethostname()}-{child.pid}-" in left[0].name
    other_host = tmp_path / "cache" / f".valve-0123.tmp-elsewhere-{child.pid}-0a1b2c3d"
    other_host.mkdir()  # a build on another machine sharing the cache folder: not ours to judge
    cache = AudioCache.open_or_build(files[:3], tmp_path / "cache", name="fan", progress=False)  # another key
    assert not left[0].exists() and other_host.exists()
    assert len(cache) == 3


def test_asd_evaluate_names_a_missing_score_file_and_never_overwrites_the_runs_table(tmp_path: Path, capsys) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=1, n_test=1, seconds=0.1)
    from asd_lightning.data.clip_index import build_clip_index

    clips = build_clip_index(root, 2022, splits=["test"])
    scores = clips.assign(score=np.arange(len(clips), dtype=float), decision=0)
    folder = tmp_path / "submission"
    write_submission(scores, folder, 2022)
    (folder / "scores.csv").write_text("the run's own table\n")
    args = ["--year", "2022", "--scores", str(folder), "--root", str(root)]
    assert evaluate_main(args) == 2
    assert f"{folder} already holds scores.csv (the run's own table); pass --out <folder>" in capsys.readouterr().err
    assert (folder / "scores.csv").read_text() == "the run's own table\n"
    assert evaluate_main(args + ["--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "scores.json").is_file()
    (folder / "anomaly_score_fan_section_01_test.csv").unlink()
    assert evaluate_main(args + ["--out", str(tmp_path / "eval")]) == 2
    assert (f"{folder / 'anomaly_score_fan_section_01_test.csv'} is missing (its decision_result file "
            "decision_result_fan_section_01_test.csv is there)") in capsys.readouterr().err


# ================================================================ round 2 (issue 21)
# ---------------------------------------------------------------- 1. results never lost or mixed
def test_a_run_owns_its_folder_a_second_run_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=ae_baseline", "seed=1"], tmp_path / "run")
    overrides = tmp_path / "run" / ".hydra" / "overrides.yaml"
    overrides.parent.mkdir(parents=True)
    overrides.write_text("- seed=1\n")  # what Hydra wrote for the run
    first = preflight.claim_run_folder(cfg)
    first.record(cfg)
    overrides.write_text("- seed=2\n")  # Hydra of a second run in the folder, before any check
    with pytest.raises(preflight.PreflightError, match=rf"{tmp_path / 'run'} is in use by another run \(host .*, "
                                                       rf"pid {os.getpid()}\); .*own folder \(hydra.run.dir=<folder>\)"):
        preflight.claim_run_folder(cfg)
    assert overrides.read_text() == "- seed=1\n"  # the refused run put the owner's back
    first.release()
    preflight.claim_run_folder(cfg).release()  # free again
    lock = tmp_path / "run" / preflight.RUN_STATE / "lock"  # another run's process holds it (flock, as a run does)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); f.write(f'host h, pid {os.getpid()}'); f.flush(); "
                               "print('held', flush=True); time.sleep(120)", str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(preflight.PreflightError, match=f"pid {holder.pid}"):
        preflight.claim_run_folder(cfg)
    holder.kill(), holder.wait()
    preflight.claim_run_folder(cfg).release()  # the dead run's lock is taken over


def test_a_run_in_a_folder_of_a_run_with_other_settings_is_refused_before_training(tmp_path: Path) -> None:
    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=2, n_test=1)
    common = ["experiment=ae_baseline", "trainer.max_epochs=1", *copy_of(root, tmp_path, "fan")]
    seed1 = compose_train([*common, "seed=1"], tmp_path / "run")
    preflight.claim_run_folder(seed1).release()  # a run that failed its checks keeps no settings
    preflight.claim_run_folder(compose_train([*common, "seed=3"], tmp_path / "run")).release()
    claim = preflight.claim_run_folder(seed1)
    claim.record(seed1), claim.release()  # seed 1 ran here
    # a resume with other loading settings is the same run
    preflight.claim_run_folder(compose_train([*common, "seed=1", "data.num_workers=1"], tmp_path / "run")).release()
    with pytest.raises(preflight.PreflightError, match=r"run holds a run with other settings \(seed: 1 there, 2 now, data.seed: 1 there, 2 now\); "
                                                       r"resuming or re-running"):
        train(compose_train([*common, "seed=2", "ckpt_path=last"], tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "cache").exists()


def test_a_checkpoint_write_that_fails_leaves_no_truncated_file(tmp_path: Path) -> None:
    import errno

    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from asd_lightning.callbacks.checkpointing import ModelCheckpoint

    callback = ModelCheckpoint(dirpath=tmp_path, filename="epoch_{epoch:03d}", monitor=None, save_last=True,
                               auto_insert_metric_name=False, save_top_k=-1)
    trainer = L.Trainer(max_epochs=2, callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_train_batches=1, limit_val_batches=1)
    io, save = trainer.strategy.checkpoint_io, trainer.strategy.checkpoint_io.save_checkpoint

    def disk_full_in_epoch_1(checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == 1:
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        save(checkpoint, path, storage_options)

    io.save_checkpoint = disk_full_in_epoch_1
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(BoringModel())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # no partial file
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 0  # still the whole epoch 0


def test_too_little_disk_for_the_checkpoints_fails_in_the_preflight(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.demos.boring_classes import BoringModel

    from asd_lightning.callbacks.checkpointing import ModelCheckpoint

    callback = ModelCheckpoint(dirpath=tmp_path / "run" / "checkpoints", save_top_k=1, save_last=True)
    model = BoringModel()  # 66 float32 parameters: 3 x 264 bytes + 1 MiB per checkpoint, 3 files
    need = 3 * (3 * 264 + 2**20)
    monkeypatch.setattr(preflight, "disk_usage", lambda path: audio_cache.shutil._ntuple_diskusage(1, 1, need - 1))
    with pytest.raises(preflight.PreflightError, match=r"run/checkpoints: 3 MiB free, but the checkpoints need about "
                                                       r"3 MiB \(2 kept and one being written.*set "
                                                       r"callbacks.model_checkpoint.dirpath=<a folder with room>"):
        preflight.check_free_space([callback], model)
    monkeypatch.setattr(preflight, "disk_usage", lambda path: audio_cache.shutil._ntuple_diskusage(1, 1, need))
    preflight.check_free_space([callback], model)


def scored_folder(folder: Path, clips: Path, scores: list[float], run: bool = True, stamp: int = 0) -> Path:
    """A finished run (``.hydra`` and ``submission/``) or a bare submission folder, scoring four
    test clips (files under ``clips``) and two fit clips of fan section 00, with its data record."""
    from asd_lightning.metrics.results import data_record, score_run
    from test_fusion import run_table

    table = run_table(fit=[1.0, 3.0], test=scores)
    test = table[table["split"] == "test"].assign(path=[str(clips / f"t{i}.wav") for i in range(4)])
    for path in test["path"]:
        if not Path(path).exists():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"RIFF")
            os.utime(path, ns=(stamp, stamp))
    scored = score_run(test, table[table["split"] == "train"], 2022)
    scored.data = data_record(clips, scored.test)
    if run:
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text("[]\n")
    return scored.save(folder / "submission" if run else folder)


def test_asd_fuse_never_writes_into_a_run_and_reads_a_run_only_from_its_submission(tmp_path: Path, capsys) -> None:
    from asd_lightning.scoring.fusion_cli import main as fuse_main

    a = tmp_path / "a"
    scored_folder(a, tmp_path / "data", [2.0, 4.0, 0.0, 6.0])
    scored_folder(tmp_path / "b", tmp_path / "data", [1.0, 5.0, 2.0, 3.0])
    before = {p: p.read_bytes() for p in (a / "submission").iterdir()}
    for out in (a / "submission", a):
        assert fuse_main([str(a), str(tmp_path / "b"), "--out", str(out)]) == 2
        assert f"--out {out} is a run's folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (a / "submission").iterdir()} == before and not (a / "clip_scores.csv").exists()
    bare = tmp_path / "someone's"
    scored_folder(bare, tmp_path / "data", [1.0, 2.0, 3.0, 4.0], run=False)
    assert fuse_main([str(a), str(tmp_path / "b"), "--out", str(bare)]) == 2
    assert "already holds clip_scores.csv, scores.json, scores.csv of a run (no fusion.json)" in capsys.readouterr().err
    # a stray clip_scores.csv at a run's top level is never read: a run is read from submission/
    (a / "clip_scores.csv").write_text("year,machine,section,domain,label,split,file,score\n")
    from asd_lightning.scoring.fusion import clip_scores_file, is_fused

    assert clip_scores_file(a) == a / "submission" / "clip_scores.csv"
    # a fused result is its own kind: recognised, re-fusable, and may be replaced by the next fusion
    assert fuse_main([str(a), str(tmp_path / "b"), "--out", str(tmp_path / "fused")]) == 0
    assert is_fused(tmp_path / "fused") and clip_scores_file(tmp_path / "fused") == tmp_path / "fused" / "clip_scores.csv"
    assert fuse_main([str(a), str(tmp_path / "b"), "--out", str(tmp_path / "fused")]) == 0


def test_asd_fuse_refuses_runs_on_other_data_and_warns_about_a_run_given_twice(tmp_path: Path, capsys) -> None:
    from asd_lightning.scoring.fusion_cli import main as fuse_main

    scored_folder(tmp_path / "a", tmp_path / "set1", [2.0, 4.0, 0.0, 6.0], stamp=10**18)
    scored_folder(tmp_path / "b", tmp_path / "set2", [1.0, 5.0, 2.0, 3.0], stamp=2 * 10**18)  # same names, other data
    assert fuse_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "fused")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"asd-fuse: error: {tmp_path / 'b'} scored other data than {tmp_path / 'a'}: the fan "
                                     f"test clips under {tmp_path / 'set2'} and {tmp_path / 'set1'} differ") in err
    assert not (tmp_path / "fused").exists()
    scored_folder(tmp_path / "c", tmp_path / "set1", [1.0, 5.0, 2.0, 3.0])  # the same data as a
    assert fuse_main([str(tmp_path / "a"), str(tmp_path / "c"), str(tmp_path / "a" / "submission"),
                      "--out", str(tmp_path / "fused")]) == 0
    assert (f"asd-fuse: warning: {tmp_path / 'a' / 'submission'} is the same run as {tmp_path / 'a'}"
            in capsys.readouterr().err)
    assert json.loads((tmp_path / "fused" / "data.json").read_text())["root"] == str(tmp_path / "set1")


def test_a_multirun_with_a_failed_job_writes_the_table_names_the_job_and_exits_3(tiny_data, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    code, _, err = finish(start(["-m", *[o for o in TINY_RUN if not o.startswith(("trainer.max_epochs", "data.batch"))],
                                 "trainer.max_epochs=1", *tiny_data, "data.batch_size=4,0", f"hydra.sweep.dir={sweep}"],
                                tmp_path))
    assert code == 3, err[-3000:]
    assert "asd-train: error: data.batch_size=0: the batch size must be an integer >= 1" in err
    assert "Traceback" not in err  # a user error: one line, and the other job ran
    table = pd.read_csv(sweep / "results.csv")
    assert set(table["machine"]) == {"fan", "all"}
    markdown = (sweep / "results.md").read_text()
    assert "failed: " in markdown and "data.batch_size=0" in markdown and f"{sweep / '1'} has no submission" in markdown
    assert "1 job(s) of the multirun are not in the results table" in err


# ---------------------------------------------------------------- 4. user errors: one line, documented exit code
def test_a_user_error_prints_one_line_without_traceback_and_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    from hydra.core.global_hydra import GlobalHydra

    from asd_lightning.train import main

    GlobalHydra.instance().clear()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["asd-train", "experiment=ae_baseline", "seed=-1", f"hydra.run.dir={tmp_path / 'run'}"])
    import logging

    handlers, level = list(logging.root.handlers), logging.root.level
    try:
        with pytest.raises(SystemExit) as stop:  # what the console script exits with
            main()
    finally:  # Hydra's job logging wrote to this test's captured streams
        logging.root.handlers[:], logging.root.level = handlers, level
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err and "Error executing job" not in err, err
    assert "asd-train: error: seed=-1: the seed must be an integer in [0, 4294967295] (or null: no seeding)\n" in err


def test_genuine_bugs_keep_their_traceback_user_errors_do_not(tmp_path: Path, capsys) -> None:
    from omegaconf import OmegaConf

    from asd_lightning.train import failed
    from asd_lightning.utils.errors import EXIT_USER_ERROR, UserError

    cfg = OmegaConf.create({"task_name": "eval"})
    with pytest.raises(SystemExit) as stop:
        failed(cfg, UserError("set\n  x=1"))
    assert stop.value.code == EXIT_USER_ERROR == 2 and capsys.readouterr().err == "asd-eval: error: set x=1\n"
    bug = KeyError("a bug")
    with pytest.raises(KeyError):
        failed(cfg, bug)
    # every error the project raises on purpose is a UserError
    assert issubclass(preflight.PreflightError, UserError) and issubclass(ClipIndexError, UserError)
    assert issubclass(AudioDecodeError, UserError)


# ---------------------------------------------------------------- 3. bad values: caught first, in one line
@pytest.mark.parametrize("overrides, message", [
    (["experiment=sc_adacos", "data.train_crop.seconds=0"], "data.train_crop.seconds=0: the training crop must be "
                                                            "longer than 0 s"),
    (["experiment=ae_baseline", "data.train_crop.frames=-5"], "data.train_crop.frames=-5: the training crop (log-mel "
                                                              "frames) must be an integer >= 1"),
    (["experiment=ae_baseline", "data.batch_size=0"], "data.batch_size=0: the batch size must be an integer >= 1"),
    (["experiment=ae_baseline", "seed=-1"], "seed=-1: the seed must be an integer in [0, 4294967295]"),
    (["experiment=mobilenetv2_baseline", "callbacks=inlier", "callbacks/inlier_model@callbacks.inlier.model=gmm",
      "callbacks.inlier.model.n_components=0"], "callbacks.inlier.model.n_components=0: the GMM's number of "
                                                "components must be an integer >= 1"),
    (["experiment=mobilenetv2_baseline", "callbacks=inlier", "callbacks.inlier.model.k=0"],
     "callbacks.inlier.model.k=0: the number of nearest neighbours must be an integer >= 1"),
])
def test_values_out_of_range_fail_before_anything_is_built(overrides: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(preflight.PreflightError) as error:
        train(compose_train(overrides, tmp_path / "run"))  # no data.root: nothing is built before the check
    assert str(error.value).startswith(message)


def test_max_epochs_0_is_refused_unless_the_method_trains_nothing(tmp_path: Path) -> None:
    from asd_lightning.models.logmel_stats import LogMelStats

    cfg = compose_train(["experiment=ae_baseline", "trainer.max_epochs=0"], tmp_path / "run")
    with pytest.raises(preflight.PreflightError, match=r"trainer.max_epochs=0 trains nothing, so the run would score "
                                                       r"an untrained model; set trainer.max_epochs>=1"):
        preflight.check_epochs(cfg, torch.nn.Linear(1, 1))
    preflight.check_epochs(cfg, LogMelStats.__new__(LogMelStats))  # training-free: nothing to refuse
    with pytest.raises(preflight.PreflightError, match="trainer.max_epochs=0 trains nothing"):
        train(cfg)  # checked before any data is read (there is none here)


def test_the_short_clip_message_names_the_override_of_the_experiment(tmp_path: Path) -> None:
    margin = compose_train(["experiment=sc_adacos"], tmp_path / "a")
    assert preflight.test_segments_override(margin) == "data.train_crop.seconds=<at most the shortest clip's length>"
    assert preflight.test_segments_override(compose_train(["experiment=ae_baseline"], tmp_path / "b")) == \
        "data.test_segments=..."


# ---------------------------------------------------------------- 2. nothing written outside the run
def test_asd_report_on_a_folder_without_runs_writes_nothing(tmp_path: Path, capsys) -> None:
    from asd_lightning.sweeps.cli import main as report_main

    make_2022(tmp_path / "data", machines=("fan",), sections=(0,), n_train=1, n_test=1, seconds=0.1)
    for folder in (tmp_path / "empty", tmp_path / "data"):
        folder.mkdir(exist_ok=True)
        before = sorted(folder.rglob("*"))
        assert report_main([str(folder)]) == 2
        assert f"asd-report: error: {folder} holds no run" in capsys.readouterr().err
        assert sorted(folder.rglob("*")) == before


def test_a_search_exports_next_to_the_sweep_and_prints_the_command_that_finds_the_config(tmp_path: Path,
                                                                                          monkeypatch, capsys) -> None:
    from asd_lightning.sweeps.export import missing_tuned_config, tuned_config, write_tuned_config
    from asd_lightning.sweeps.search import Cell, PerMachineSearch
    from asd_lightning.train import config_dir, main

    search = PerMachineSearch(method="ae_baseline", n_trials=1)
    search.sweep_dir = tmp_path / "sweep"
    cell = Cell("fan", ["data.machine_types=[fan]"], [], ["fan"])
    configs = tmp_path / "sweep" / "configs"
    assert search.export_path(cell) == configs / "experiment" / "tuned" / "ae_baseline" / "fan.yaml"  # not conf/
    command = search.rerun_command(cell)
    assert command == (f"asd-train experiment=tuned/ae_baseline/fan 'hydra.searchpath=[file://{configs}]' "
                       "data.root=<dataset>")
    write_tuned_config(search.export_path(cell), tuned_config(["experiment=ae_baseline", "data.batch_size=8"],
                                                              ["experiment"], [], ["a test"]))
    # the printed command composes
    arguments = [a.strip("'") for a in command.split()[1:-1]]
    assert compose_train(arguments, tmp_path / "rerun").data.batch_size == 8
    assert missing_tuned_config(arguments, config_dir()) is None
    # a custom export_dir is the config folder (or the experiment/tuned folder in one)
    assert PerMachineSearch(method="m", n_trials=1, export_dir=str(tmp_path / "c")).export_root() == tmp_path / "c"
    assert PerMachineSearch(method="m", n_trials=1, export_dir=str(tmp_path / "c" / "experiment" / "tuned")
                            ).export_root() == tmp_path / "c"
    # without the search path: where exported configs are looked for, and how to add it, in one line
    monkeypatch.setattr(sys, "argv", ["asd-train", "experiment=tuned/ae_baseline/fan"])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"asd-train: error: no exported config experiment=tuned/ae_baseline/fan: looked for "
                          f"{config_dir()}/experiment/tuned/ae_baseline/fan.yaml. A search exports")
    assert "add hydra.searchpath=[file://<that folder>]" in err


def test_the_held_out_rescore_is_named_as_such(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from asd_lightning.sweeps.search import Cell, PerMachineSearch

    search = PerMachineSearch(method="ae_baseline", n_trials=1)
    search.sweep_dir = tmp_path
    (tmp_path / "fan" / "trial_003" / "checkpoints").mkdir(parents=True)
    (tmp_path / "fan" / "trial_003" / "checkpoints" / "last.ckpt").write_bytes(b"")
    best = SimpleNamespace(number=3, params={"data.batch_size": 8}, user_attrs={"folder": "fan/trial_003"})
    overrides = search.final_overrides(Cell("fan", ["data.machine_types=[fan]"], [], ["fan"]), best, [])
    assert "trial=3-heldout" in overrides and "train=false" in overrides
    cfg = compose_train([*[o for o in overrides if not o.startswith(("hydra.", "++"))], "logger=wandb"], tmp_path / "r")
    assert cfg.logger.wandb.name == "fan-seed12345-trial3-heldout"  # the trial itself: fan-seed12345-trial3


def test_a_search_checks_its_report_sections_before_the_first_trial(tmp_path: Path, caplog) -> None:
    from asd_lightning.sweeps.search import check_report_sections

    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=1, n_test=1, seconds=0.1,
                     eval_section=3)
    (root / "ground_truth").rename(tmp_path / "ground_truth")  # the evaluation clips unlabelled

    def data(sections: str) -> "DictConfig":
        return compose_train(["experiment=ae_baseline", f"data.root={root}", "data.machine_types=[fan]",
                              f"data.test_sections={sections}"], tmp_path / "run").data

    with pytest.raises(preflight.UserError, match=r"the search reports on test section\(s\) \[5\] of \['fan'\] "
                                                  r"\(data.test_sections=\[5\]\), but .* holds no such test clips: "
                                                  r"every trial would run"):
        check_report_sections("fan", data("[0]"), data("[5]"), ["data.test_sections=[5]"])
    with pytest.raises(preflight.UserError, match=r"their test clips under .* are unlabelled: set data.ground_truth="):
        check_report_sections("fan", data("[0]"), data("[3]"), ["data.test_sections=[3]"])
    with caplog.at_level("WARNING", logger="asd_lightning.sweeps.search"):
        check_report_sections("fan", data("[0]"), data("[1]"), [])
        assert "overlap" not in caplog.text
        check_report_sections("fan", data("[0,1]"), data("[1]"), [])
    assert "study fan: the report sections ([1]) overlap the tuning sections ([0, 1])" in caplog.text


# ---------------------------------------------------------------- 5. small things
def test_results_md_gives_every_seeds_value_per_section_and_results_csv_the_domain(tmp_path: Path) -> None:
    from asd_lightning.sweeps.report import ResultsTable
    from test_sweeps import fake_run, rows22

    for i, (seed, auc) in enumerate([(1, 0.6), (2, 0.8)]):
        fake_run(tmp_path / str(i), ["data.machine_types=[fan]", f"seed={seed}"], seed,
                 rows22("fan", {0: (auc, 0.5, 0.55)}))
    results = ResultsTable.from_folders([tmp_path])
    sections = results.table[results.table["section"] == "00"].set_index("metric")["domain"]
    assert sections["auc_source"] == "source" and sections["pauc_target"] == "target" and sections["pauc"] == ""
    markdown = results.to_markdown()
    assert "| fan | 00 | AUC (source) | 60.00 | 80.00 |" in markdown.split("### Per section and seed (%)")[1]
    assert "| machine | section | AUC (source) |" in markdown  # the mean ± std table: no domain column


def test_unlabelled_evaluation_clips_say_that_scores_need_the_ground_truth(tmp_path: Path, caplog) -> None:
    from types import SimpleNamespace

    from asd_lightning.callbacks.official_scores import OfficialScores

    files = [tmp_path / f"section_03_{i:04d}.wav" for i in range(4)] + [tmp_path / f"train_{i}.wav" for i in range(3)]
    for path in files:
        path.write_bytes(b"RIFF")
    clips = pd.DataFrame({"clip_id": range(7), "machine": "fan", "section": 3, "domain": "unknown",
                          "label": ["unknown"] * 4 + ["normal"] * 3, "split": ["test"] * 4 + ["train"] * 3,
                          "file": [p.name for p in files], "path": list(map(str, files))})
    trainer = SimpleNamespace(datamodule=SimpleNamespace(clips=clips, year=2022, root=tmp_path), is_global_zero=True)
    callback = OfficialScores(output_dir=tmp_path / "submission")
    with caplog.at_level("WARNING", logger="asd_lightning.callbacks.official_scores"):
        callback.publish(trainer, None, pd.DataFrame({"clip_id": range(4), "score": [1.0, 2.0, 3.0, 4.0]}),
                         pd.DataFrame({"clip_id": [4, 5, 6], "score": [1.0, 2.0, 1.5]}))
    assert ("no test clip of fan is labelled (evaluation clips need their ground truth), so there are no scores"
            in caplog.text and "set data.ground_truth=" in caplog.text)
    assert (tmp_path / "submission" / "anomaly_score_fan_section_03_test.csv").is_file()
    assert not (tmp_path / "submission" / "scores.json").exists()


def test_asd_evaluate_says_a_row_belongs_to_another_sections_file(tmp_path: Path, capsys) -> None:
    from asd_lightning.data.clip_index import build_clip_index

    root = make_2022(tmp_path / "data", machines=("fan",), sections=(0, 1), n_train=1, n_test=1, seconds=0.1)
    clips = build_clip_index(root, 2022, splits=["test"])
    scores = clips.assign(score=np.arange(len(clips), dtype=float), decision=0)
    moved = scores.iloc[:1].assign(section=1)  # a section 00 clip, also in section 01's file
    write_submission(pd.concat([scores, moved]), tmp_path / "submission", 2022)
    args = ["--year", "2022", "--scores", str(tmp_path / "submission"), "--root", str(root), "--out", str(tmp_path / "e")]
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"1 scored file(s) are in another section's file, e.g. fan/{moved['file'].item()} "
                                     "is scored in section 01's file but is a test clip of section 00") in err


# ---------------------------------------------------------------- integration of the round's features
def test_a_user_error_raised_while_hydra_builds_an_object_still_prints_one_line(tmp_path: Path, capsys) -> None:
    """Hydra wraps an error raised in a target (datamodule, model, callback) in an
    InstantiationException: the user error behind it is still one line and exit 2."""
    from omegaconf import OmegaConf

    from asd_lightning.train import failed

    cfg = compose_train(["experiment=genrep", "data=synthetic", f"model.encoder.checkpoint={tmp_path / 'BEATs_iter3.pt'}"],
                        tmp_path / "run")
    with pytest.raises(Exception) as raised:
        hydra.utils.instantiate(cfg.model)
    assert type(raised.value).__name__ == "InstantiationException"
    with pytest.raises(SystemExit) as stop:
        failed(OmegaConf.create({"task_name": "train"}), raised.value)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("asd-train: error: ") and "model.encoder.checkpoint=" in err
    # settings of the new data options are user errors too, not bugs
    with pytest.raises(SystemExit):
        failed(OmegaConf.create({}), _instantiation_error(compose_train(["data.channels=both"], tmp_path / "r2")))


def _instantiation_error(cfg) -> Exception:
    with pytest.raises(Exception) as raised:
        hydra.utils.instantiate(cfg.data)
    return raised.value


def test_synthetic_data_follows_its_year_and_difficulty_in_its_folder_and_machine_types(tmp_path: Path) -> None:
    """data=synthetic with data.year=2026 (the near/far recipe) names the 2026 machine types, and
    each year and difficulty has its own folder, so a multirun over them never rewrites another
    job's data."""
    default = compose_train(["data=synthetic"], tmp_path / "a")
    assert list(default.data.machine_types) == ["fan", "gearbox", "valve"]
    assert Path(default.data.root).name == "synthetic2022-realistic"
    stereo = compose_train(["experiment=near_far_consistency", "data=synthetic"], tmp_path / "b")
    assert list(stereo.data.machine_types) == ["fan", "gearboxEmu", "valveEmu"]
    assert Path(stereo.data.root).name == "synthetic2026-realistic"
    easy = compose_train(["data=synthetic", "data.synthetic.difficulty=easy"], tmp_path / "c")
    assert Path(easy.data.root).name == "synthetic2022-easy"


def test_pre_trainings_of_other_years_or_microphones_never_share_a_folder(tmp_path: Path) -> None:
    def folder(*overrides: str) -> str:
        cfg = compose_train(["experiment=dgmix_pretrain", "data.machine_types=[fan]", *overrides], tmp_path)
        fine = compose_train(["experiment=dgmix_finetune", "data.machine_types=[fan]", *overrides], tmp_path)
        assert str(fine.model.encoder_ckpt) == str(Path(cfg.callbacks.model_checkpoint.dirpath) / "last.ckpt")
        return Path(cfg.callbacks.model_checkpoint.dirpath).name

    assert folder() == "dgmix_2022_fan_seed12345"
    assert folder("data.year=2026", "data.channels=far") == "dgmix_2026_fan_far_seed12345"
    assert len({folder(), folder("data.year=2026"), folder("data.year=2026", "data.channels=far")}) == 3


def test_a_resume_after_an_upgrade_that_added_a_setting_is_not_refused(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=ae_baseline"], tmp_path / "run")
    claim = preflight.claim_run_folder(cfg)
    claim.record(cfg)
    claim.release()
    record = claim.state / "config.yaml"
    text = record.read_text()
    assert "drop_last" in text
    record.write_text("\n".join(line for line in text.splitlines() if "drop_last" not in line))  # an older record
    preflight.claim_run_folder(cfg).release()  # data.drop_last is new, not changed
    changed = compose_train(["experiment=ae_baseline", "seed=7"], tmp_path / "run")
    with pytest.raises(preflight.PreflightError, match="seed: 12345 there, 7 now"):
        preflight.claim_run_folder(changed)


def test_the_checkpoint_size_counts_optimiser_moments_of_trainable_weights_only() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(100, 100), torch.nn.Linear(100, 10))
    model = torch.nn.Module()
    model.net = net
    full = preflight.checkpoint_bytes(model)
    net[0].requires_grad_(False)
    weights = sum(p.numel() * 4 for p in net.parameters())
    assert full == 3 * weights + (1 << 20)
    assert preflight.checkpoint_bytes(model) == weights + 2 * 4 * (100 * 10 + 10) + (1 << 20)


def test_a_genrep_search_reports_by_running_again_as_there_is_no_checkpoint(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from asd_lightning.train import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train.yaml", overrides=["hparams_search=genrep", "experiment=genrep"], return_hydra_config=True)
    assert cfg.hydra.sweeper.final == "rerun"
