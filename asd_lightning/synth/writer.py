"""Writing a synthetic dataset to disk: WAV files, ground truth and the stored config."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .attributes import stable_id
from .config import SAMPLE_RATE, SynthConfig
from .generator import synthesize_clips
from .layout import DOMAINS, LABELS, MANAGED_ENTRIES, ClipSpec, plan_clips, write_ground_truth
from .stereo import to_stereo
from .supplemental import supplemental_clips
from .years import is_stereo, sound_model

log = logging.getLogger(__name__)

CONFIG_FILE = "synth_config.json"
GENERATOR_TAG = "asd_lightning.synth"
FORMAT_VERSION = 3  # bumped whenever the same settings give other audio (3: difficulty)
CHUNK = 16  # clips synthesised at once; fixed so that output never depends on parallelism


def is_synthetic_dataset(path: str | Path) -> bool:
    """Whether ``path`` holds a dataset written by this module (it has our config file)."""
    try:
        meta = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR_TAG


def read_dataset_config(path: str | Path) -> SynthConfig:
    """The :class:`SynthConfig` a synthetic dataset at ``path`` was written with."""
    meta = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    return SynthConfig.from_dict(meta["config"])


def _prepare_directory(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not (is_synthetic_dataset(root) or overwrite):
            raise FileExistsError(
                f"{root} is not empty and does not hold a synthetic dataset (no {CONFIG_FILE} "
                f"from {GENERATOR_TAG}); refusing to write into it. Choose an empty or new "
                f"directory, or pass overwrite=True (CLI: --overwrite) to replace "
                f"{', '.join(MANAGED_ENTRIES)} there.")
        for name in MANAGED_ENTRIES:
            entry = root / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _chunks(clips: list[ClipSpec]) -> list[list[ClipSpec]]:
    out = []
    for _, group in groupby(clips, key=lambda c: c.group):
        group = list(group)
        out += [group[i:i + CHUNK] for i in range(0, len(group), CHUNK)]
    return out


def _chunk_rng(config: SynthConfig, chunk: list[ClipSpec]) -> np.random.Generator:
    first = chunk[0]
    return np.random.default_rng([
        config.seed, stable_id(first.machine_type), first.section,
        DOMAINS.index(first.domain), int(first.split == "test"), LABELS.index(first.label),
        first.index // CHUNK])


def _write_chunk(root: Path, config: SynthConfig, chunk: list[ClipSpec]) -> None:
    first = chunk[0]
    rng = _chunk_rng(config, chunk)
    audio = synthesize_clips(
        sound_model(first.machine_type), first.section, first.domain, [c.attributes for c in chunk],
        [c.anomaly for c in chunk], seconds=config.clip_seconds, rng=rng,
        anomaly_strength=config.anomaly_strength, domain_shift=config.domain_shift,
        background_level=config.background_level, difficulty=config.difficulty, sr=SAMPLE_RATE)
    if is_stereo(config.year):
        audio = to_stereo(audio, rng, SAMPLE_RATE)
    for clip, samples in zip(chunk, audio):
        _write_wav(root / clip.relpath, samples)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit PCM WAV of float ``samples`` (``[samples]`` or ``[samples, channels]``)."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    # Encode in memory: soundfile's close() fsyncs real files, which is slow on many files.
    buffer = io.BytesIO()
    sf.write(buffer, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    path.write_bytes(buffer.getvalue())


def _write_supplemental(root: Path, config: SynthConfig) -> None:
    """The supplemental clips of years that have them (:mod:`.supplemental`)."""
    for relpath, samples in supplemental_clips(config).items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        _write_wav(root / relpath, samples)


def summarize(clips: list[ClipSpec]) -> dict[str, int]:
    """Clip counts: ``dev_train``, ``dev_test``, ``eval_train``, ``eval_test`` and ``total``."""
    counts = Counter(f"{c.dataset}_{c.split}" for c in clips)
    summary = {k: counts.get(k, 0) for k in ("dev_train", "dev_test", "eval_train", "eval_test")}
    summary["total"] = len(clips)
    return summary


def _metadata(config: SynthConfig, clips: list[ClipSpec]) -> dict[str, Any]:
    return {
        "generator": GENERATOR_TAG,
        "format_version": FORMAT_VERSION,
        "layout_year": config.layout_year,
        "sample_rate": SAMPLE_RATE,
        "config": config.to_dict(),
        "counts": summarize(clips),
    }


_README = """Synthetic DCASE Task 2 style dataset written by asd_lightning.synth (asd-synth).
Layout of the DCASE {year} data; 16 kHz, {channels}, 16-bit PCM WAV; {seconds:g} s clips.
Difficulty: {difficulty} (see docs/synthetic.md).
Machine types: {machines}. Development sections: {dev}. Evaluation sections: {eval}.
Clips: {counts}.
Regenerate exactly with the config in synth_config.json (same seed -> identical files):
    asd-synth --year {cfg_year} --difficulty {difficulty} --out DIR --seed {seed} ... (see synth_config.json)
"""


def write_synthetic_dataset(out_dir: str | Path, config: SynthConfig | None = None, *,
                            overwrite: bool = False, workers: int | None = None,
                            **overrides: Any) -> Path:
    """Synthesise a dataset into ``out_dir`` and return the dataset root (``out_dir``).

    ``overrides`` replace fields of ``config`` (or of the default :class:`SynthConfig`).
    ``out_dir`` must be new, empty or a previous synthetic dataset (replaced); any other
    non-empty directory raises :class:`FileExistsError` unless ``overwrite`` is set, which
    replaces only this module's entries there (``dev_data``, ``eval_data``, ``ground_truth``,
    ``synth_config.json``, ``README.txt``). Clips are synthesised and written in small chunks
    (``workers`` threads), so full-size datasets need little memory; the output depends only
    on the config.
    """
    config = (config or SynthConfig()).replace(**overrides)
    root = Path(out_dir)
    _prepare_directory(root, overwrite)
    clips = plan_clips(config)
    for folder in sorted({str(Path(c.relpath).parent) for c in clips}):
        (root / folder).mkdir(parents=True, exist_ok=True)
    meta = _metadata(config, clips)
    (root / CONFIG_FILE).write_text(json.dumps({**meta, "complete": False}, indent=2,
                                               sort_keys=True) + "\n", encoding="utf-8")
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = _chunks(clips)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda ch: _write_chunk(root, config, ch), chunks))
    else:
        for chunk in chunks:
            _write_chunk(root, config, chunk)
    _write_supplemental(root, config)
    write_ground_truth(root, clips, config.year)
    (root / "README.txt").write_text(_README.format(
        year=config.year, seconds=config.clip_seconds, difficulty=config.difficulty,
        channels="stereo (near microphone left, far right)" if is_stereo(config.year) else "mono",
        machines=", ".join(config.machine_types),
        dev=", ".join(f"{s:02d}" for s in config.dev_sections),
        eval=", ".join(f"{s:02d}" for s in config.eval_sections) or "none",
        counts=", ".join(f"{k} {v}" for k, v in meta["counts"].items()),
        cfg_year=config.year, seed=config.seed), encoding="utf-8")
    (root / CONFIG_FILE).write_text(json.dumps({**meta, "complete": True}, indent=2,
                                               sort_keys=True) + "\n", encoding="utf-8")
    return root


def matches_synthetic_dataset(root: str | Path, config: SynthConfig) -> bool:
    """Whether ``root`` holds a complete synthetic dataset written with ``config``."""
    root = Path(root)
    if not is_synthetic_dataset(root):
        return False
    meta = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    return bool(meta.get("complete")) and meta.get("format_version") == FORMAT_VERSION \
        and SynthConfig.from_dict(meta["config"]) == config


def ensure_synthetic_dataset(out_dir: str | Path, config: SynthConfig | None = None,
                             **overrides: Any) -> Path:
    """Like :func:`write_synthetic_dataset`, but reuse a complete dataset with the same config.

    A half-written dataset (interrupted writer) or one written with other settings is replaced;
    a non-empty folder that is not a synthetic dataset is an error, as in the writer.
    """
    config = (config or SynthConfig()).replace(**overrides)
    if matches_synthetic_dataset(out_dir, config):
        return Path(out_dir)
    log.info("writing the synthetic dataset (seed %d) to %s", config.seed, out_dir)
    return write_synthetic_dataset(out_dir, config)
