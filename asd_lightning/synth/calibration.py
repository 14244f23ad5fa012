"""A simple baseline detector used to check how hard a synthetic dataset is.

Per section it fits a detector on clip-level features of the training normals (mean and
standard deviation over time of a 128-band log-mel spectrogram, n_fft 1024, hop 512) and
scores the development test clips: ``knn`` = distance to the nearest standardised training
clip, ``gaussian`` = Mahalanobis distance under a Ledoit-Wolf covariance. AUCs follow the
DCASE 2022 rule (AUC source: source normals + all anomalies of the section; likewise target)
or, with ``protocol="per_domain"``, each domain's own test clips only (DCASE 2021).

Run ``python -m asd_lightning.synth.calibration --seeds 0 1 2`` for a table (``--difficulty
easy`` for the easy set).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from asd_lightning.data.clip_index import build_clip_index
from asd_lightning.features.log_mel import LogMel
from asd_lightning.metrics.official import evaluate

from .config import SAMPLE_RATE, SynthConfig
from .difficulty import DIFFICULTIES
from .writer import read_dataset_config, write_synthetic_dataset


@dataclass(frozen=True)
class SectionResult:
    machine_type: str
    section: int
    auc_source: float
    auc_target: float
    pauc: float


def clip_features(audio: np.ndarray) -> np.ndarray:
    """Mean and std over time of the log-mel spectrogram: ``(n, T) -> (n, 256)``."""
    with torch.no_grad():
        logmel = LogMel(sample_rate=SAMPLE_RATE)(torch.as_tensor(audio, dtype=torch.float32))
    return torch.cat([logmel.mean(-1), logmel.std(-1)], dim=-1).numpy()


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


def load_dev_features(root: str | Path, chunk: int = 64) -> tuple[pd.DataFrame, np.ndarray]:
    """The development clips of a synthetic dataset (the clip index of
    :func:`~asd_lightning.data.clip_index.build_clip_index`) and their features, one row each."""
    config = read_dataset_config(root)
    clips = build_clip_index(root, config.year, sections=config.dev_sections)
    paths = clips["path"].tolist()
    feats = [clip_features(np.stack([sf.read(p, dtype="float32")[0] for p in paths[i:i + chunk]]))
             for i in range(0, len(paths), chunk)]
    return clips, np.concatenate(feats)


def score_sections(clips: pd.DataFrame, feats: np.ndarray, detector: str = "knn",
                   protocol: str = "dcase2022") -> list[SectionResult]:
    """Fit the detector per section on its training normals and score the test clips.

    ``dcase2022``: AUCs by the DCASE 2022 rules (each domain's normals + all anomalies);
    ``per_domain``: DCASE 2021 rules (each domain's own clips; ``pauc`` = mean of the two
    domains' pAUC). Both through :func:`asd_lightning.metrics.evaluate`.
    """
    years = {"dcase2022": 2022, "per_domain": 2021}
    if protocol not in years:
        raise ValueError(f"unknown protocol {protocol!r} (dcase2022 or per_domain)")
    scored = []
    for _, group in clips.groupby(["machine", "section"], sort=True):
        train, test = group.index[group["split"] == "train"], group.index[group["split"] == "test"]
        scored.append(clips.loc[test].assign(score=_scores(feats[train], feats[test], detector)))
    rows = evaluate(pd.concat(scored), years[protocol]).rows
    if protocol == "dcase2022":
        return [SectionResult(r.machine, int(r.section), r.auc_source, r.auc_target, r.pauc)
                for r in rows.itertuples()]
    wide = rows.pivot_table(index=["machine", "section"], columns="domain", values=["auc", "pauc"])
    return [SectionResult(machine, int(section), r[("auc", "source")], r[("auc", "target")],
                          (r[("pauc", "source")] + r[("pauc", "target")]) / 2)
            for (machine, section), r in wide.iterrows()]


def evaluate_baseline(root: str | Path, detector: str = "knn",
                      protocol: str = "dcase2022") -> list[SectionResult]:
    """AUC (source), AUC (target) and pAUC per development section of the dataset at ``root``."""
    clips, feats = load_dev_features(root)
    return score_sections(clips, feats, detector, protocol)


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
    parser.add_argument("--difficulty", choices=list(DIFFICULTIES), default=None)
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
