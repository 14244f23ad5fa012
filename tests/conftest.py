"""Shared fixtures: tiny WAV datasets in every DCASE layout, written on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
# ASD_SAMPLE_DIR points elsewhere (e.g. from a git worktree whose ../shared is not the project's)
SHARED_SAMPLE = Path(os.environ.get("ASD_SAMPLE_DIR") or REPO / ".." / "shared" / "data" / "dcase2023-sample")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` skip, each with the reason, where no CUDA device is found."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device (run with -m gpu on a GPU machine)"))


def write_wav(path: Path, seconds: float = 1.0, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16",
              seed: int = 0, freq: float = 440.0) -> np.ndarray:
    """Write a tone plus noise; returns the float samples written."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    data = np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else mono
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)
    return data


def make_2022(root: Path, machines=("fan", "valve"), sections=(0, 1), n_train=3, n_test=2, seconds=1.0,
              eval_section: int | None = None) -> Path:
    """A small 2022-layout copy: dev_data/<machine>/{train,test}, optional eval_data + ground truth."""
    seed = 0
    for m_i, machine in enumerate(machines):
        base = root / "dev_data" / machine
        for s in sections:
            for domain, count in (("source", n_train), ("target", 1)):
                for i in range(count):
                    seed += 1
                    write_wav(base / "train" / f"section_{s:02d}_{domain}_train_normal_{i:04d}_a_{m_i}_b_{s}.wav",
                              seconds, seed=seed, freq=300 + 100 * m_i + 30 * s)
                for label in ("normal", "anomaly"):
                    for i in range(n_test):
                        seed += 1
                        write_wav(base / "test" / f"section_{s:02d}_{domain}_test_{label}_{i:04d}_a_{m_i}_b_{s}.wav",
                                  seconds, seed=seed, freq=300 + 100 * m_i + 30 * s + (200 if label == "anomaly" else 0))
        if eval_section is not None:
            ev = root / "eval_data" / machine
            for i in range(n_train):
                seed += 1
                write_wav(ev / "train" / f"section_{eval_section:02d}_source_train_normal_{i:04d}_a_{m_i}.wav",
                          seconds, seed=seed)
            labels, domains = [], []
            for i in range(4):
                seed += 1
                write_wav(ev / "test" / f"section_{eval_section:02d}_{i:04d}.wav", seconds, seed=seed)
                labels.append(f"section_{eval_section:02d}_{i:04d}.wav,{i % 2}\n")
                domains.append(f"section_{eval_section:02d}_{i:04d}.wav,{i // 2}\n")
            gt = root / "ground_truth"
            for folder, rows in (("ground_truth_data", labels), ("ground_truth_domain", domains)):
                (gt / folder).mkdir(parents=True, exist_ok=True)
                (gt / folder / f"ground_truth_{machine}_section_{eval_section:02d}_test.csv").write_text("".join(rows))
    return root


def make_2023(root: Path, machine: str = "fan", values=("X", "Y"), n_train=4, n_test=2, seconds=1.0,
              eval_clips: int = 0) -> Path:
    """A small 2023-layout copy: one machine type, section 00 only, attribute ``m-n`` with one
    tone per value (``values``); source training clips of every value, one target clip of the
    last; test clips of every value (the last one's in the target domain); ``eval_clips``
    anonymised evaluation test clips."""
    base = root / "dev_data" / machine
    seed = 100
    for v_i, value in enumerate(values):
        freq = 300 + 250 * v_i
        domains = (("source", n_train),) + ((("target", 1),) if v_i == len(values) - 1 else ())
        for domain, count in domains:
            for i in range(count):
                seed += 1
                write_wav(base / "train" / f"section_00_{domain}_train_normal_{v_i * 100 + i:04d}_m-n_{value}.wav",
                          seconds, seed=seed, freq=freq)
        test_domain = "target" if v_i == len(values) - 1 else "source"
        for label in ("normal", "anomaly"):
            for i in range(n_test):
                seed += 1
                write_wav(base / "test" / f"section_00_{test_domain}_test_{label}_{v_i * 100 + i:04d}_m-n_{value}.wav",
                          seconds, seed=seed, freq=freq + (120 if label == "anomaly" else 0))
    for i in range(eval_clips):
        seed += 1
        write_wav(root / "eval_data" / machine / "test" / f"section_00_{i:04d}.wav", seconds, seed=seed)
    return root


@pytest.fixture
def dataset_2022(tmp_path: Path) -> Path:
    return make_2022(tmp_path / "dcase2022", eval_section=3)


@pytest.fixture
def shared_sample() -> Path:
    if not SHARED_SAMPLE.is_dir():
        pytest.skip(f"real DCASE 2023 sample not available at {SHARED_SAMPLE} (../shared is absent)")
    return SHARED_SAMPLE.resolve()


@pytest.fixture
def bundle():
    """A model bundle for fan sections 0 and 1: an untrained MobileNetV2 encoder, 1-NN scorers
    fitted on random embeddings, 64-frame test windows (at least 32256 samples per file)."""
    import torch

    from asd_lightning.data.decode import DecodeOptions
    from asd_lightning.deploy import ModelBundle
    from asd_lightning.features.log_mel import LogMel
    from asd_lightning.models.section_id_baseline import SectionIDBaseline
    from asd_lightning.scoring import KNNInlier
    from asd_lightning.scoring.section_scorer import SectionScorer

    torch.manual_seed(0)
    encoder = SectionIDBaseline(num_classes=2).eval()
    rng = np.random.default_rng(0)
    scorers = {s: SectionScorer([KNNInlier(k=1).fit(rng.normal(size=(5, 1280)))]) for s in (0, 1)}
    return ModelBundle(machine="fan", encoder=encoder, frontend=LogMel(),
                       test_segments={"kind": "windows", "frames": 64, "hop": 8},
                       decode_options=DecodeOptions(), scorers=scorers, threshold=40.0, amplitude=(0.0, 0.1))


@pytest.fixture
def bundle_dir(bundle, tmp_path: Path) -> Path:
    return bundle.save(tmp_path / "bundle")


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> list[str]:
    """Overrides for 2-epoch AE-baseline runs on a tiny synthetic set (fan and valve, sections
    00 and 01, 1 s clips) with its decode cache, for sweeps run as child processes."""
    from asd_lightning.synth import SynthConfig, write_synthetic_dataset

    base = tmp_path_factory.mktemp("sweep_data")
    root = write_synthetic_dataset(base / "synth", SynthConfig(
        machine_types=("fan", "valve"), dev_sections=(0, 1), eval_sections=(), source_train_clips=6,
        target_train_clips=1, test_clips=2, clip_seconds=1.0, difficulty="easy"))
    return ["experiment=ae_baseline", f"data.root={root}", f"data.cache_dir={base / 'cache'}", "data.num_workers=0",
            "data.batch_size=4", "trainer.accelerator=cpu", "trainer.max_epochs=2", "data.progress=false",
            "+trainer.enable_progress_bar=false"]


def child_env(root: Path) -> dict[str, str]:
    """A child asd-train's environment: this checkout and tests/ first on the path, outputs under
    ``root``, W&B offline."""
    return dict(os.environ, ASD_ROOT=str(root), PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
                WANDB_MODE="offline", WANDB_SILENT="true")


def asd_train(arguments: list[str], cwd: Path) -> subprocess.Popen:
    """``asd-train <arguments>`` as a child process in ``cwd``."""
    return subprocess.Popen([sys.executable, "-m", "asd_lightning.train", *arguments], cwd=cwd, env=child_env(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err
