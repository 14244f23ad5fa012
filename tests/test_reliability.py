"""Reliability, as a demanding user meets it: interrupted runs resume exactly, preemption is
never a silent success, bad inputs fail early with one line naming the file and the Hydra
override, and asd-score / asd-evaluate handle bad files and folders.

Training runs here are real child processes (``python -m asd_lightning.train``) on a tiny
DCASE folder, killed or signalled at a known batch by the test-only ``PauseAt`` callback.
Concurrent cache builds (one decode, one cache) are tested in ``test_decode_cache``, bad score
CSVs in ``test_evaluate_cli``.
"""

from __future__ import annotations

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
    # 2 sections x (anomaly_score, decision_result), thresholds, clip_scores.csv, scores.csv/json
    assert len(outputs(run)) == 8
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
    assert len(outputs(tmp_path / "a")) == 6 and outputs(tmp_path / "a") == outputs(tmp_path / "b")


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
