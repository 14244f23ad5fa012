"""A simple baseline detector used to check how hard a synthetic dataset is.

Per section it fits a detector on clip-level features of the training normals (mean and
standard deviation over time of a 128-band log-mel spectrogram, n_fft 1024, hop 512) and
scores the development test clips: ``knn`` = distance to the nearest standardised training
clip, ``gaussian`` = Mahalanobis distance under a Ledoit-Wolf covariance. AUCs follow the
DCASE 2022 rule (AUC source: source normals + all anomalies of the section; likewise target)
or, with ``protocol="per_domain"``, each domain's own test clips only (DCASE 2021).

Run ``python -m asd_lightning.synth.calibration --seeds 0 1 2`` for a table.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from .config import SAMPLE_RATE, SynthConfig
from .writer import write_synthetic_dataset

_NAME = re.compile(r"^section_(\d{2})_(source|target)_(train|test)_(normal|anomaly)_\d{4}")


@dataclass(frozen=True)
class SectionResult:
    machine_type: str
    section: int
    auc_source: float
    auc_target: float
    pauc: float


def clip_features(audio: np.ndarray) -> np.ndarray:
    """Mean and std over time of the log-mel spectrogram: ``(n, T) -> (n, 256)``."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    with torch.no_grad():
        logmel = 10.0 * torch.log10(mel(torch.as_tensor(audio, dtype=torch.float32)) + 1e-10)
    return torch.cat([logmel.mean(-1), logmel.std(-1)], dim=-1).numpy()


def _load_dev_clips(root: Path):
    """(machine, section, domain, split, label, path) for every development clip."""
    rows = []
    for path in sorted((root / "dev_data").glob("*/*/*.wav")):
        match = _NAME.match(path.name)
        if match:
            section, domain, split, label = match.groups()
            rows.append((path.parent.parent.name, int(section), domain, split, label, path))
    return rows


def _scores(train: np.ndarray, test: np.ndarray, detector: str) -> np.ndarray:
    mean, std = train.mean(0), train.std(0) + 1e-3
    train, test = (train - mean) / std, (test - mean) / std
    # Tiny problems: BLAS/OpenMP threads (contending with torch's) only slow them down.
    with threadpool_limits(1):
        if detector == "knn":
            return NearestNeighbors(n_neighbors=1).fit(train).kneighbors(test)[0][:, 0]
        if detector == "gaussian":
            return LedoitWolf().fit(train).mahalanobis(test)
    raise ValueError(f"unknown detector {detector!r} (knn or gaussian)")


def load_dev_features(root: str | Path):
    """Development clip descriptions ``(machine, section, domain, split, label, path)`` and
    their features (one row each)."""
    rows = _load_dev_clips(Path(root))
    if not rows:
        raise FileNotFoundError(f"no development clips under {root}/dev_data")
    audio = [sf.read(r[5], dtype="float32")[0] for r in rows]
    feats = np.concatenate([clip_features(np.stack(audio[i:i + 64]))
                            for i in range(0, len(audio), 64)])
    return rows, feats


def score_sections(rows, feats: np.ndarray, detector: str = "knn",
                   protocol: str = "dcase2022") -> list[SectionResult]:
    """Fit the detector per section on training normals and compute the test AUCs."""
    if protocol not in ("dcase2022", "per_domain"):
        raise ValueError(f"unknown protocol {protocol!r} (dcase2022 or per_domain)")
    results = []
    for machine, section in sorted({(r[0], r[1]) for r in rows}):
        idx = [i for i, r in enumerate(rows) if (r[0], r[1]) == (machine, section)]
        train = [i for i in idx if rows[i][3] == "train"]
        test = [i for i in idx if rows[i][3] == "test"]
        scores = _scores(feats[train], feats[test], detector)
        domain = np.array([rows[i][2] for i in test])
        anomaly = np.array([rows[i][4] == "anomaly" for i in test])

        def auc(dom):
            keep = (domain == dom) & ~anomaly
            keep |= anomaly if protocol == "dcase2022" else anomaly & (domain == dom)
            return float(roc_auc_score(anomaly[keep], scores[keep]))

        results.append(SectionResult(machine, section, auc("source"), auc("target"),
                                     float(roc_auc_score(anomaly, scores, max_fpr=0.1))))
    return results


def evaluate_baseline(root: str | Path, detector: str = "knn",
                      protocol: str = "dcase2022") -> list[SectionResult]:
    """AUC (source), AUC (target) and pAUC per development section of the dataset at ``root``."""
    rows, feats = load_dev_features(root)
    return score_sections(rows, feats, detector, protocol)


def summarize(results: Sequence[SectionResult]) -> dict[str, float]:
    """Arithmetic means of the section results."""
    return {key: float(np.mean([getattr(r, key) for r in results]))
            for key in ("auc_source", "auc_target", "pauc")}


def calibrate(seeds: Sequence[int] = (0, 1, 2), detector: str = "knn",
              protocol: str = "dcase2022", config: SynthConfig | None = None,
              **overrides) -> tuple[dict[str, float], list[tuple[int, SectionResult]]]:
    """Write the (default) dataset once per seed into a temporary folder and score it.

    Returns the mean scores over all seeds and sections, and the ``(seed, result)`` list.
    """
    config = (config or SynthConfig()).replace(**overrides)
    per_seed: list[tuple[int, SectionResult]] = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="asd_synth_calib_") as tmp:
            root = write_synthetic_dataset(tmp, config.replace(seed=seed, eval_sections=()))
            per_seed += [(seed, r) for r in evaluate_baseline(root, detector, protocol)]
    return summarize([r for _, r in per_seed]), per_seed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Baseline difficulty of the synthetic dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--detector", choices=["knn", "gaussian"], default="knn")
    parser.add_argument("--protocol", choices=["dcase2022", "per_domain"], default="dcase2022")
    parser.add_argument("--year", type=int, default=None)
    parser.add_argument("--machine-types", nargs="+", default=None)
    parser.add_argument("--anomaly-strength", type=float, default=None)
    parser.add_argument("--domain-shift", type=float, default=None)
    parser.add_argument("--background-level", type=float, default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("seeds", "detector", "protocol") and v is not None}
    means, per_seed = calibrate(args.seeds, args.detector, args.protocol, **overrides)
    for seed, r in per_seed:
        print(f"seed {seed}  {r.machine_type:9s} section {r.section:02d}  "
              f"AUC source {r.auc_source:.3f}  AUC target {r.auc_target:.3f}  pAUC {r.pauc:.3f}")
    print("mean  " + "  ".join(f"{k} {v:.3f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
